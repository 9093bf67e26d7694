"""check_dataset lists every fault of a dataset folder in one pass."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from morse.data import Problem, check_dataset, format_problems

SHAPE = (6, 5, 4)


def save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))


def make_dataset(root: Path, cases: list[str], channels: int = 2) -> Path:
    root.mkdir(parents=True)
    spec = {
        "channel_names": {str(c): f"ch{c}" for c in range(channels)},
        "labels": {"background": 0, "organ": 1},
        "file_ending": ".nii.gz",
        "numTraining": len(cases),
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    for cid in cases:
        for c in range(channels):
            save(root / "imagesTr" / f"{cid}_{c:04d}.nii.gz", np.ones(SHAPE, np.float32))
        label = np.zeros(SHAPE, np.uint8)
        label[2:4, 2:4, 1:3] = 1
        save(root / "labelsTr" / f"{cid}.nii.gz", label)
    return root


def found(problems: list[Problem], path: str, text: str) -> bool:
    return any(p.path == path and text in p.message for p in problems)


def test_clean_dataset_has_no_problem(tmp_path):
    root = make_dataset(tmp_path / "D", ["a", "b"])
    for c in range(2):
        save(root / "imagesTs" / f"t_{c:04d}.nii.gz", np.ones(SHAPE, np.float32))
    assert check_dataset(root) == []


def test_every_fault_is_listed(tmp_path):
    cases = [f"c{i}" for i in range(11)]
    root = make_dataset(tmp_path / "D", cases)
    tr, lb = root / "imagesTr", root / "labelsTr"
    (tr / "c0_0001.nii.gz").unlink()  # missing channel
    (lb / "c1.nii.gz").unlink()  # missing label
    (tr / "c2_0000.nii.gz").write_bytes(b"garbage")  # unreadable
    save(lb / "c3.nii.gz", np.zeros((6, 5, 5), np.uint8))  # label shape
    save(lb / "c4.nii.gz", np.zeros(SHAPE, np.uint8), np.diag([1.0, 1.0, 2.5, 1.0]))  # spacing
    moved = np.eye(4)
    moved[:3, 3] = (0.0, 4.0, 0.0)
    save(lb / "c5.nii.gz", np.zeros(SHAPE, np.uint8), moved)  # origin
    bad_label = np.zeros(SHAPE, np.uint8)
    bad_label[0, 0, 0] = 5
    save(lb / "c6.nii.gz", bad_label)  # label value
    nan_image = np.ones(SHAPE, np.float32)
    nan_image[1, 1, 1], nan_image[2, 2, 2] = np.nan, np.inf
    save(tr / "c7_0001.nii.gz", nan_image)  # NaN / inf
    save(tr / "c8_0001.nii.gz", np.ones((6, 5, 3), np.float32))  # channel grid
    save(lb / "orphan.nii.gz", np.zeros(SHAPE, np.uint8))  # label without image
    save(tr / "c9.nii.gz", np.ones(SHAPE, np.float32))  # no channel suffix
    save(tr / "c10_0002.nii.gz", np.ones(SHAPE, np.float32))  # unknown channel
    save(root / "imagesTs" / "t_0000.nii.gz", np.ones(SHAPE, np.float32))  # test lacks _0001

    problems = check_dataset(root)
    text = format_problems(problems)
    expected = [
        ("imagesTr/c0_0001.nii.gz", "file not found"),
        ("labelsTr/c1.nii.gz", "file not found"),
        ("imagesTr/c2_0000.nii.gz", "cannot be read as NIfTI"),
        ("imagesTr/c3_0000.nii.gz", "shape (6, 5, 4) differs from its label labelsTr/c3.nii.gz"),
        ("imagesTr/c4_0000.nii.gz", "spacing (1.0, 1.0, 1.0) differs from its label"),
        ("imagesTr/c5_0000.nii.gz", "affine (origin/direction) differs from its label"),
        ("labelsTr/c6.nii.gz", "label values [5] are not listed"),
        ("imagesTr/c7_0001.nii.gz", "2 NaN or infinite voxels"),
        ("imagesTr/c8_0001.nii.gz", "differs from channel 0 imagesTr/c8_0000.nii.gz"),
        ("labelsTr/orphan.nii.gz", "label without an image"),
        ("imagesTr/c9.nii.gz", "channel suffix"),
        ("imagesTr/c10_0002.nii.gz", "channel 2 is not in dataset.json"),
        ("imagesTs/t_0001.nii.gz", "file not found"),
    ]
    for path, message in expected:
        assert found(problems, path, message), f"{path}: {message!r} not in\n{text}"
    assert len(problems) == len(expected), text
    assert all("\n" not in str(p) and str(p).startswith(p.path + ": ") for p in problems)


def test_num_training_mismatch(tmp_path):
    root = make_dataset(tmp_path / "D", ["a", "b"])
    spec = json.loads((root / "dataset.json").read_text())
    spec["numTraining"] = 5
    (root / "dataset.json").write_text(json.dumps(spec))
    problems = check_dataset(root)
    assert [str(p) for p in problems] == [
        "dataset.json: numTraining is 5 but imagesTr holds 2 case(s); fix numTraining"
    ]


def test_dataset_json_faults(tmp_path):
    assert found(check_dataset(tmp_path), "dataset.json", "not found")
    (tmp_path / "dataset.json").write_text("{not json")
    assert found(check_dataset(tmp_path), "dataset.json", "not valid JSON")
    (tmp_path / "dataset.json").write_text(json.dumps({"numTraining": "two"}))
    problems = check_dataset(tmp_path)
    for text in ("channel_names", "labels", "file_ending", "numTraining 'two'"):
        assert found(problems, "dataset.json", text), format_problems(problems)


def test_empty_images_folder_and_missing_labels_folder(tmp_path):
    root = make_dataset(tmp_path / "D", [])
    (root / "imagesTr").mkdir()
    problems = check_dataset(root)
    assert found(problems, "imagesTr", "no case files"), format_problems(problems)


def test_decathlon_dataset_checked(tmp_path):
    root = tmp_path / "Task02_Heart"
    spec = {
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "left atrium"},
        "numTraining": 2,
        "training": [
            {"image": f"./imagesTr/la_{i}.nii.gz", "label": f"./labelsTr/la_{i}.nii.gz"}
            for i in (1, 2)
        ],
        "test": [],
    }
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps(spec))
    for i in (1, 2):
        save(root / "imagesTr" / f"la_{i}.nii.gz", np.ones(SHAPE, np.float32))
    save(root / "labelsTr" / "la_1.nii.gz", np.ones(SHAPE, np.uint8))
    save(root / "labelsTr" / "la_2.nii.gz", np.full(SHAPE, 3, np.uint8))
    problems = check_dataset(root)
    assert [p.path for p in problems] == ["labelsTr/la_2.nii.gz"], format_problems(problems)
    assert "label values [3]" in problems[0].message


def test_test_set_needs_a_label_per_case_once_labelsts_exists(tmp_path):
    root = make_dataset(tmp_path / "D", ["a"], channels=1)
    for case in ("t1", "t2", "t3"):
        save(root / "imagesTs" / f"{case}_0000.nii.gz", np.ones(SHAPE, np.float32))
    save(root / "labelsTs" / "t1.nii.gz", np.zeros(SHAPE, np.uint8))
    save(root / "labelsTs" / "t2.nii.gz", np.zeros((6, 5, 5), np.uint8))  # another grid
    save(root / "labelsTs" / "stray.nii.gz", np.zeros(SHAPE, np.uint8))
    problems = check_dataset(root)
    expected = [
        ("labelsTs/t3.nii.gz", "file not found; labelsTs exists"),
        ("imagesTs/t2_0000.nii.gz", "differs from its label labelsTs/t2.nii.gz"),
        ("labelsTs/stray.nii.gz", "label without an image in imagesTs"),
    ]
    for path, message in expected:
        assert found(problems, path, message), format_problems(problems)
    assert len(problems) == len(expected), format_problems(problems)


def test_test_label_values_are_checked(tmp_path):
    root = make_dataset(tmp_path / "D", ["a"], channels=1)
    save(root / "imagesTs" / "t_0000.nii.gz", np.ones(SHAPE, np.float32))
    save(root / "labelsTs" / "t.nii.gz", np.full(SHAPE, 7, np.uint8))
    problems = check_dataset(root)
    assert [p.path for p in problems] == ["labelsTs/t.nii.gz"], format_problems(problems)
    assert "label values [7]" in problems[0].message


def test_check_command_ends_with_a_one_line_summary(tmp_path, capsys):
    from morse.cli.main import main

    root = make_dataset(tmp_path / "Dataset009_X", ["a", "b"], channels=1)
    save(root / "imagesTs" / "t_0000.nii.gz", np.ones(SHAPE, np.float32))
    assert main(["check", str(root)]) == 0
    assert capsys.readouterr().out.strip() == (
        "Dataset009_X: 2 training cases, 1 test cases (0 labelled), 0 problems")
    (root / "labelsTr" / "b.nii.gz").unlink()
    assert main(["check", str(root)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("labelsTr/b.nii.gz: file not found")
    assert lines[-1] == "Dataset009_X: 2 training cases, 1 test cases (0 labelled), 1 problems"


def _scan(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32)


def test_a_case_in_both_training_and_held_out_folders_is_leakage_by_name(tmp_path, capsys):
    from morse.cli.main import main

    root = make_dataset(tmp_path / "Dataset009_X", ["a", "b"], channels=1)
    save(root / "imagesTs" / "a_0000.nii.gz", _scan(1))  # another scan under a training name
    problems = check_dataset(root)
    assert [p.path for p in problems] == ["imagesTs/a_0000.nii.gz"], format_problems(problems)
    assert "case a is also a training case (imagesTr/a_0000.nii.gz);" in problems[0].message
    assert "remove the case from imagesTs" in problems[0].message
    assert main(["check", str(root)]) == 1
    assert capsys.readouterr().out.strip().endswith("1 problems")


def test_a_held_out_copy_of_a_training_case_under_another_name_is_leakage(tmp_path):
    root = make_dataset(tmp_path / "D", ["a", "b"], channels=1)
    scan = _scan(2)
    save(root / "imagesTr" / "b_0000.nii.gz", scan)
    save(root / "imagesTs" / "t_0000.nii.gz", scan.astype(np.float64))  # re-saved as float64
    save(root / "imagesTs" / "u_0000.nii.gz", _scan(3))  # a case of its own
    problems = check_dataset(root)
    assert [p.path for p in problems] == ["imagesTs/t_0000.nii.gz"], format_problems(problems)
    assert problems[0].message.startswith(
        "same voxels as training case b (imagesTr/b_0000.nii.gz) under another name; "
        "remove the case from imagesTs")


def test_same_name_and_same_voxels_say_both(tmp_path):
    root = make_dataset(tmp_path / "D", ["a"], channels=1)
    scan = _scan(4)
    save(root / "imagesTr" / "a_0000.nii.gz", scan)
    save(root / "imagesTs" / "a_0000.nii.gz", scan)
    problems = check_dataset(root)
    assert len(problems) == 1, format_problems(problems)
    assert "case a is also a training case (imagesTr/a_0000.nii.gz) with the same voxels" in (
        problems[0].message)
