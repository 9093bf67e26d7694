"""The pip-only demo data: tissue labels from probability maps, the nilearn folder, the split
into held-out axial slabs, and the real MNI152 files when nilearn is installed."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from morse.data import mni_tissue
from morse.data.mni_tissue import (
    TISSUE_CLASSES,
    load_mni_tissue,
    nilearn_data_dir,
    tissue_demo_split,
    tissue_labels,
)
from morse.errors import DataError

from helpers import make_mni_tissue

HAVE_NILEARN = importlib.util.find_spec("nilearn") is not None
needs_nilearn = pytest.mark.skipif(not HAVE_NILEARN,
                                   reason='nilearn not installed (pip install "morse-seg[demo]")')


def test_tissue_needs_half_a_voxel_of_brain_then_takes_the_likelier_tissue():
    gm = np.array([0.0, 0.49, 0.25, 0.3, 0.2, 0.5])
    wm = np.array([0.0, 0.0, 0.25, 0.2, 0.3, 0.5])
    assert tissue_labels(gm, wm).tolist() == [0, 0, 1, 1, 2, 1]
    assert tissue_labels(gm, wm, threshold=0.6).tolist() == [0, 0, 0, 0, 0, 1]


def test_missing_nilearn_names_the_install_line(monkeypatch):
    monkeypatch.setattr(mni_tissue.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r'not installed.*pip install "morse-seg\[demo\]"'):
        nilearn_data_dir()


def test_missing_file_is_named_with_the_fix(tmp_path, monkeypatch):
    root = make_mni_tissue(tmp_path / "data")
    (root / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").unlink()
    with pytest.raises(DataError, match=r"wm_tal_nlin_sym_09a_converted.nii.gz: not found; set"):
        load_mni_tissue(root)
    monkeypatch.setattr(mni_tissue, "nilearn_data_dir", lambda: root)  # a broken install
    with pytest.raises(DataError, match=r"converted.nii.gz: not found; pip install"):
        load_mni_tissue()


def test_fixture_folder_loads_with_uint8_maps_scaled_to_probabilities(tmp_path):
    volume = load_mni_tissue(make_mni_tissue(tmp_path / "data"))
    assert volume.image.shape == (1, 16, 6, 64) and volume.image.dtype == np.float32
    assert volume.label.dtype == np.int64 and volume.case_id == "mni152"
    assert volume.label[8, 0, 30] == 2 and volume.label[3, 0, 30] == 1  # 200 vs 40; 230 alone
    assert volume.label[0, 0, 30] == 0 and volume.label[8, 0, 1] == 0


def test_split_holds_out_slabs_of_the_left_hemisphere_only(tmp_path):
    volume = load_mni_tissue(make_mni_tissue(tmp_path / "data"))
    subsets = tissue_demo_split(volume, val_fraction=0.1, test_fraction=0.25, gap=2)

    def world(part):  # (N, 3) world coordinates of every voxel of a slab
        index = np.indices(part.spatial_shape).reshape(3, -1)
        return (part.affine[:3, :3] @ index + part.affine[:3, 3:]).T

    z = {name: np.concatenate([world(v)[:, 2] for v in vols]) for name, vols in subsets.items()}
    assert len(subsets["train"]) == 3 and all(len(z[n]) for n in z)
    for held_out in ("val", "test"):  # at least `gap` slices (2 mm) from any training slice
        distance = np.abs(z[held_out][:, None] - np.unique(z["train"])[None]).min()
        assert distance > 2.0
    x = np.concatenate([world(v)[:, 0] for vols in subsets.values() for v in vols])
    assert x.max() < 0  # the right hemisphere, the mirror of the left, is nowhere


def test_split_refuses_fractions_that_overlap(tmp_path):
    volume = load_mni_tissue(make_mni_tissue(tmp_path / "data"))
    with pytest.raises(DataError, match="overlap; make them smaller"):
        tissue_demo_split(volume, val_fraction=0.4, test_fraction=0.4)


@needs_nilearn
def test_real_template_gives_three_tissues_without_importing_nilearn():
    loaded_before = {name for name in sys.modules if name.startswith("nilearn")}
    assert (nilearn_data_dir() / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz").is_file()
    volume = load_mni_tissue(downsample=4)
    assert {name for name in sys.modules if name.startswith("nilearn")} == loaded_before
    assert volume.image.shape == (1, 49, 58, 47) and volume.spacing == (4.0, 4.0, 4.0)
    counts = np.bincount(volume.label.ravel(), minlength=len(TISSUE_CLASSES))
    assert len(counts) == 3 and counts[1] > counts[2] > 0  # more grey than white matter
    subsets = tissue_demo_split(volume, 0.1, 0.25)
    for part in subsets["test"]:
        assert set(np.unique(part.label)) == {0, 1, 2}


@needs_nilearn
def test_real_template_is_symmetric_so_a_hemisphere_would_be_no_test():
    volume = load_mni_tissue()
    np.testing.assert_array_equal(volume.label, volume.label[::-1])
    np.testing.assert_array_equal(volume.image, volume.image[:, ::-1])
