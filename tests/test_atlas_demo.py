"""Demo atlas: AAL grouping table, loading (real files when installed), downsampling, slabs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from morse.data import Volume, load_atlas_demo
from morse.data.atlas_demo import (
    AAL_GROUPS,
    ATLAS_CLASSES,
    DEFAULT_TEMPLATE_DIR,
    aal_class_lut,
    downsample_volume,
    foreground_slice_range,
    read_aal_table,
)
from morse.errors import DataError

HAVE_FILES = all(
    (DEFAULT_TEMPLATE_DIR / n).is_file() for n in ("ch2.nii.gz", "aal.nii.gz", "aal.nii.txt")
)
needs_files = pytest.mark.skipif(
    not HAVE_FILES, reason="mricron-data not installed (sudo apt-get install mricron-data)"
)


def test_table_shape():
    names = [n for members in AAL_GROUPS.values() for n in members]
    assert ATLAS_CLASSES[0] == "background" and AAL_GROUPS["background"] == []
    assert len(names) == 116 and len(set(names)) == 116
    assert 9 <= len(ATLAS_CLASSES) - 1 <= 12


@needs_files
def test_every_aal_region_is_in_exactly_one_class():
    table = read_aal_table(DEFAULT_TEMPLATE_DIR / "aal.nii.txt")
    assert len(table) == 116 and sorted(table) == list(range(1, 117))
    membership = Counter(n for members in AAL_GROUPS.values() for n in members)
    for name in table.values():
        assert membership[name] == 1, name
    assert set(membership) == set(table.values())
    lut = aal_class_lut(table)
    assert lut[0] == 0 and np.all(lut[1:] > 0)


def test_lut_rejects_unassigned_region():
    table = {i + 1: n for i, n in enumerate(n for m in AAL_GROUPS.values() for n in m)}
    table[117] = "Brainstem"
    with pytest.raises(DataError, match=r"\['Brainstem'\] are in no class"):
        aal_class_lut(table)


@needs_files
def test_load_real_atlas_downsampled():
    vol = load_atlas_demo(downsample=4)
    assert vol.image.shape == (1, 45, 54, 45) and vol.label.shape == (45, 54, 45)
    assert vol.spacing == (4.0, 4.0, 4.0)
    assert set(np.unique(vol.label)) == set(range(len(ATLAS_CLASSES)))
    head = vol.image[0][vol.image[0] != 0]
    assert abs(head.mean()) < 0.2 and 0.8 < head.std() < 1.2
    # world position of voxel 0 is the centre of the first 4x4x4 block of the 1 mm grid
    np.testing.assert_allclose(vol.affine[:3, 3], np.array([-90.0, -125.0, -71.0]) + 1.5)


def test_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(DataError) as info:
        load_atlas_demo(tmp_path / "templates")
    text = str(info.value)
    assert "sudo apt-get install mricron-data" in text and str(tmp_path / "templates") in text


def test_downsample_image_linear_label_nearest_affine_kept():
    image = np.arange(6 * 6 * 4, dtype=np.float32).reshape(1, 6, 6, 4)
    label = np.zeros((6, 6, 4), np.int64)
    label[3:, :, :] = 2
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = (10.0, 20.0, 30.0)
    small = downsample_volume(Volume(image, label, affine), 2)
    assert small.image.shape == (1, 3, 3, 2) and small.spacing == (2.0, 4.0, 6.0)
    assert small.image[0, 0, 0, 0] == pytest.approx(image[0, :2, :2, :2].mean())
    assert set(np.unique(small.label)) <= {0, 2} and small.label[2, 0, 0] == 2
    # the new voxel (1, 1, 1) lies at the centre of old voxels 2..3 on each axis
    centre = small.affine @ np.array([1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(centre[:3], affine[:3, :3] @ np.full(3, 2.5) + affine[:3, 3])


def test_foreground_slice_range():
    label = np.zeros((3, 3, 20), np.int64)
    label[1, 1, 4:15] = 3
    assert foreground_slice_range(label) == (4, 15)
    assert foreground_slice_range(label, axis=0) == (1, 2)
    with pytest.raises(DataError, match="no foreground"):
        foreground_slice_range(np.zeros((2, 2, 2)))
