"""NIfTI I/O and nnU-Net v2 / Decathlon dataset folders (small files under tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from morse.data import (
    list_cases,
    load_case,
    read_dataset_json,
    read_nifti,
    write_array_like,
    write_label_like,
)
from morse.errors import DataError

SHAPE = (6, 5, 4)


def save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def oblique_affine(spacing=(0.7, 0.9, 3.0), angle=0.3) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    tilt = np.array(
        [[1.0, 0.0, 0.0], [0.0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]]
    )
    affine = np.eye(4)
    affine[:3, :3] = tilt @ rotation @ np.diag(spacing)
    affine[:3, 3] = (-12.5, 30.25, 7.0)
    return affine


def make_nnunet(root: Path, cases=("a", "b"), channels=("T2", "ADC"), labels=None) -> Path:
    labels = labels or {"background": 0, "lesion": 1, "organ": 2}
    spec = {
        "channel_names": {str(i): n for i, n in enumerate(channels)},
        "labels": labels,
        "file_ending": ".nii.gz",
        "numTraining": len(cases),
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(spec))
    for n, cid in enumerate(cases):
        for c in range(len(channels)):
            image = np.full(SHAPE, 10.0 * n + c, np.float32)
            save(root / "imagesTr" / f"{cid}_{c:04d}.nii.gz", image)
        label = np.zeros(SHAPE, np.uint8)
        label[1:3, 1:3, 1:3] = 1 + n % 2
        save(root / "labelsTr" / f"{cid}.nii.gz", label)
    for c in range(len(channels)):
        save(root / "imagesTs" / f"t_{c:04d}.nii.gz", np.zeros(SHAPE, np.float32))
    return root


# ----------------------------------------------------------------------------- NIfTI


def test_read_nifti_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError, match="missing.nii.gz: file not found"):
        read_nifti(tmp_path / "missing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti file at all")
    with pytest.raises(DataError, match="bad.nii.gz: cannot be read as NIfTI"):
        read_nifti(bad)


def test_write_label_like_round_trips_oblique_anisotropic_grid(tmp_path):
    ref_img = nib.Nifti1Image(np.random.rand(*SHAPE).astype(np.float32), oblique_affine())
    ref_img.set_qform(oblique_affine(), code=1)
    ref_img.set_sform(oblique_affine(), code=2)
    ref_path = tmp_path / "ref.nii.gz"
    nib.save(ref_img, str(ref_path))
    _, ref_affine, ref_header = read_nifti(ref_path)  # float32-stored affine
    label = np.random.default_rng(0).integers(0, 5, SHAPE)

    out = write_label_like(tmp_path / "out" / "seg.nii.gz", label, ref_path)
    array, affine, header = read_nifti(out)

    assert array.shape == SHAPE and array.dtype == np.uint8
    np.testing.assert_array_equal(array, label)
    np.testing.assert_array_equal(affine, ref_affine)
    np.testing.assert_allclose(affine, oblique_affine(), atol=1e-5)
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 2
    np.testing.assert_allclose(header.get_zooms(), ref_header.get_zooms())
    np.testing.assert_allclose(header.get_zooms(), (0.7, 0.9, 3.0), atol=1e-6)


def test_write_label_like_large_values_and_loaded_reference(tmp_path):
    ref = nib.Nifti1Image(np.zeros(SHAPE, np.float32), oblique_affine())
    label = np.zeros(SHAPE, np.int64)
    label[0, 0, 0] = 300
    array, affine, _ = read_nifti(write_label_like(tmp_path / "big.nii.gz", label, ref))
    assert array.dtype == np.int16 and array[0, 0, 0] == 300
    np.testing.assert_allclose(affine, oblique_affine(), atol=1e-5)


def test_write_label_like_rejects_wrong_shape_and_fractions(tmp_path):
    ref = save(tmp_path / "ref.nii.gz", np.zeros(SHAPE, np.float32))
    with pytest.raises(DataError, match="reference's spatial shape"):
        write_label_like(tmp_path / "x.nii.gz", np.zeros((6, 5, 3)), ref)
    with pytest.raises(DataError, match="non-integer"):
        write_label_like(tmp_path / "x.nii.gz", np.full(SHAPE, 0.5), ref)


def test_write_array_like_channels_first_probabilities(tmp_path):
    ref = save(tmp_path / "ref.nii.gz", np.zeros(SHAPE, np.float32), oblique_affine())
    probs = np.random.default_rng(1).random((3, *SHAPE)).astype(np.float32)
    array, affine, _ = read_nifti(
        write_array_like(tmp_path / "p.nii.gz", probs, ref, channel_axis=0)
    )
    assert array.shape == (*SHAPE, 3) and array.dtype == np.float32
    np.testing.assert_array_equal(np.moveaxis(array, -1, 0), probs)
    np.testing.assert_allclose(affine, oblique_affine(), atol=1e-5)


# ----------------------------------------------------------------------------- nnU-Net v2


def test_read_dataset_json_nnunet(tmp_path):
    root = make_nnunet(tmp_path / "D", labels={"organ": 2, "background": 0, "lesion": 1})
    spec = read_dataset_json(root)
    assert spec.layout == "nnunet" and spec.num_channels == 2
    assert spec.channel_names == {"0": "T2", "1": "ADC"}
    assert spec.class_names == ["background", "lesion", "organ"]
    assert spec.labels["organ"] == 2 and spec.file_ending == ".nii.gz" and spec.num_training == 2


def test_read_dataset_json_lists_missing_fields(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}}))
    with pytest.raises(DataError) as info:
        read_dataset_json(tmp_path)
    text = str(info.value)
    assert "dataset.json" in text and "labels" in text and "file_ending" in text
    assert "numTraining" in text and "\n" not in text
    with pytest.raises(DataError, match="dataset.json: not found"):
        read_dataset_json(tmp_path / "nowhere")


def test_read_dataset_json_rejects_regions(tmp_path):
    spec = {
        "channel_names": {"0": "T1"},
        "labels": {"background": 0, "whole": [1, 2]},
        "file_ending": ".nii.gz",
        "numTraining": 0,
    }
    (tmp_path / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match="region"):
        read_dataset_json(tmp_path)


def test_list_and_load_multichannel_cases(tmp_path):
    root = make_nnunet(tmp_path / "D")
    spec = read_dataset_json(root)
    cases = list_cases(root, "Tr")
    assert [c.case_id for c in cases] == ["a", "b"]
    assert [p.name for p in cases[1].images] == ["b_0000.nii.gz", "b_0001.nii.gz"]
    assert cases[1].label.name == "b.nii.gz"
    vol = load_case(cases[1], spec)
    assert vol.image.shape == (2, *SHAPE) and vol.image.dtype == np.float32
    assert vol.image[0].max() == 10.0 and vol.image[1].max() == 11.0
    assert vol.label.dtype == np.int64 and set(np.unique(vol.label)) == {0, 2}
    assert vol.case_id == "b" and vol.spacing == (1.0, 1.0, 1.0)
    test_cases = list_cases(root, "Ts")
    assert [c.case_id for c in test_cases] == ["t"] and test_cases[0].label is None
    assert load_case(test_cases[0], spec).label is None


def test_empty_or_missing_folder_is_named(tmp_path):
    root = make_nnunet(tmp_path / "D")
    for f in (root / "imagesTr").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"D/imagesTr: no case files"):
        list_cases(root)


def test_missing_images_ts_folder(tmp_path):
    root = make_nnunet(tmp_path / "D")
    for f in (root / "imagesTs").iterdir():
        f.unlink()
    (root / "imagesTs").rmdir()
    with pytest.raises(DataError, match=r"imagesTs: folder not found"):
        list_cases(root, "Ts")


def test_load_case_reports_missing_channel(tmp_path):
    root = make_nnunet(tmp_path / "D")
    (root / "imagesTr" / "a_0001.nii.gz").unlink()
    case = list_cases(root)[0]
    with pytest.raises(DataError, match=r"imagesTr/a_0001.nii.gz: file not found"):
        load_case(case, read_dataset_json(root))


def test_load_case_shape_mismatch_message(tmp_path):
    root = make_nnunet(tmp_path / "D", channels=("CT",))
    save(root / "labelsTr" / "a.nii.gz", np.zeros((6, 5, 5), np.uint8))
    with pytest.raises(DataError) as info:
        load_case(list_cases(root)[0], read_dataset_json(root))
    assert str(info.value) == (
        "imagesTr/a_0000.nii.gz: shape (6, 5, 4) differs from its label labelsTr/a.nii.gz "
        "(6, 5, 5); image and label must be on the same grid"
    )


def test_load_case_affine_tolerance(tmp_path):
    root = make_nnunet(tmp_path / "D", channels=("CT",))
    spec = read_dataset_json(root)
    label = np.asarray(nib.load(str(root / "labelsTr" / "a.nii.gz")).dataobj)
    shifted = np.eye(4)
    shifted[0, 3] = 5e-4  # within 1e-3 mm
    save(root / "labelsTr" / "a.nii.gz", label, shifted)
    load_case(list_cases(root)[0], spec)
    shifted[0, 3] = 0.5
    save(root / "labelsTr" / "a.nii.gz", label, shifted)
    with pytest.raises(DataError, match="affine .* differs from its label"):
        load_case(list_cases(root)[0], spec)
    save(root / "labelsTr" / "a.nii.gz", label, np.diag([1.0, 1.0, 2.0, 1.0]))
    with pytest.raises(DataError, match="spacing"):
        load_case(list_cases(root)[0], spec)


def test_load_case_channel_grids_must_agree(tmp_path):
    root = make_nnunet(tmp_path / "D")
    save(root / "imagesTr" / "a_0001.nii.gz", np.zeros((6, 5, 3), np.float32))
    with pytest.raises(DataError, match=r"a_0001.nii.gz: shape .* differs from channel 0"):
        load_case(list_cases(root)[0], read_dataset_json(root))


def test_load_case_names_unknown_label_values(tmp_path):
    root = make_nnunet(tmp_path / "D", channels=("CT",))
    label = np.zeros(SHAPE, np.uint8)
    label[0, 0, 0], label[1, 1, 1] = 7, 9
    save(root / "labelsTr" / "a.nii.gz", label)
    with pytest.raises(DataError, match=r"labelsTr/a.nii.gz: label values \[7, 9\] .*lesion=1"):
        load_case(list_cases(root)[0], read_dataset_json(root))


def test_load_case_rejects_nan(tmp_path):
    root = make_nnunet(tmp_path / "D", channels=("CT",))
    image = np.zeros(SHAPE, np.float32)
    image[2, 2, 2] = np.nan
    save(root / "imagesTr" / "b_0000.nii.gz", image)
    with pytest.raises(DataError, match="1 NaN or infinite"):
        load_case(list_cases(root)[1], read_dataset_json(root))


# ----------------------------------------------------------------------------- Decathlon


def make_msd(root: Path, channels: int = 2) -> Path:
    spec = {
        "name": "Prostate",
        "modality": {str(i): f"MRI{i}" for i in range(channels)},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "numTraining": 2,
        "training": [
            {"image": f"./imagesTr/pro_{i}.nii.gz", "label": f"./labelsTr/pro_{i}.nii.gz"}
            for i in (1, 2)
        ],
        "test": ["./imagesTs/pro_9.nii.gz"],
    }
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(spec))
    for i in (1, 2):
        image = np.stack([np.full(SHAPE, 100.0 * i + c, np.float32) for c in range(channels)], -1)
        save(root / "imagesTr" / f"pro_{i}.nii.gz", image)
        save(root / "labelsTr" / f"pro_{i}.nii.gz", np.full(SHAPE, i, np.uint8))
    (root / "imagesTr" / "._pro_1.nii.gz").write_bytes(b"macOS resource fork")
    save(root / "imagesTs" / "pro_9.nii.gz", np.zeros((*SHAPE, channels), np.float32))
    return root


def test_decathlon_layout_four_d_channels_last(tmp_path):
    root = make_msd(tmp_path / "Task05_Prostate")
    spec = read_dataset_json(root)
    assert spec.layout == "msd" and spec.num_channels == 2
    assert spec.class_names == ["background", "PZ", "TZ"] and spec.labels["TZ"] == 2
    cases = list_cases(root)
    assert [c.case_id for c in cases] == ["pro_1", "pro_2"]
    vol = load_case(cases[1], spec)
    assert vol.image.shape == (2, *SHAPE)
    assert vol.image[0, 0, 0, 0] == 200.0 and vol.image[1, 0, 0, 0] == 201.0
    assert np.all(vol.label == 2)
    test = list_cases(root, "Ts")
    assert [c.case_id for c in test] == ["pro_9"] and test[0].label is None
    assert load_case(test[0], spec).image.shape == (2, *SHAPE)


def test_decathlon_channel_count_mismatch(tmp_path):
    root = make_msd(tmp_path / "Task05", channels=2)
    save(root / "imagesTr" / "pro_1.nii.gz", np.zeros((*SHAPE, 3), np.float32))
    with pytest.raises(DataError, match="has 3 channel"):
        load_case(list_cases(root)[0], read_dataset_json(root))
