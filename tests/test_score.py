"""`morse score`: folders of label maps matched by case, checked pair by pair, scored in mm."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from morse.cli.main import main
from morse.errors import DataError
from morse.evaluation.score import label_files, score_folders
from morse.metrics import MetricSettings, case_metrics

from helpers import oblique_affine

SHAPE = (12, 10, 4)


def save(path: Path, label: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(label.astype(np.uint8), oblique_affine() if affine is None
                             else affine), path)
    return path


def box(offset: int = 0, value: int = 1) -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[3 + offset : 8 + offset, 2:7, 1:3] = value
    return label


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """Two cases; the predictions are shifted by one voxel along the 0.7 mm axis."""
    preds, refs = tmp_path / "pred", tmp_path / "labels"
    for case in ("a", "b"):
        save(refs / f"{case}.nii.gz", box())
        save(preds / f"{case}.nii.gz", box(offset=1))
    return preds, refs


def one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_scores_match_case_metrics_with_the_references_spacing(folders, tmp_path):
    preds, refs = folders
    result = score_folders(preds, refs, tmp_path / "out", verbose=False)
    expected = case_metrics(box(1), box(), 2, (0.7, 0.9, 3.0))[1].values
    assert result.per_case["a"][1].values == pytest.approx(expected)
    assert expected["hd95"] == pytest.approx(0.7)  # one voxel along the 0.7 mm axis
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert doc["prediction"]["per_case"]["b"]["label_1"]["dice"] == pytest.approx(expected["dice"])
    assert doc["missing"] == {"predictions": [], "references": []}
    rows = list(csv.DictReader((tmp_path / "out" / "metrics.csv").open()))
    assert {(r["output"], r["case"]) for r in rows} >= {("prediction", "a"), ("prediction", "mean")}


def test_command_prints_the_table_and_writes_into_the_predictions_folder(folders, capsys):
    preds, refs = folders
    assert main(["score", str(preds), str(refs)]) == 0
    out = capsys.readouterr().out
    assert "prediction" in out and "HD95 (mm)" in out and "scored 2 case(s)" in out
    assert (preds / "metrics.json").is_file()


def test_nsd_and_biou_flags_set_the_tolerances_scored_and_recorded(folders, capsys):
    preds, refs = folders
    assert main(["score", str(preds), str(refs), "--nsd", "0.5", "3", "--biou", "1"]) == 0
    doc = json.loads((preds / "metrics.json").read_text())
    assert doc["settings"] == {"nsd_tolerances": [0.5, 3.0], "biou_width": 1.0}
    expected = case_metrics(box(1), box(), 2, (0.7, 0.9, 3.0), MetricSettings((0.5, 3.0), 1.0))
    scored = doc["prediction"]["per_case"]["a"]["label_1"]
    for name in ("nsd_0.5mm", "nsd_3mm", "biou"):
        assert scored[name] == pytest.approx(expected[1].values[name]), name
    assert "nsd_1mm" not in scored and "NSD@0.5 mm" in capsys.readouterr().out
    line = one_line_error(capsys, ["score", str(preds), str(refs), "--nsd", "1", "-2"])
    assert line.endswith("--nsd 1 -2 --biou 2: NSD tolerances must be distinct and the "
                         "tolerances and the band width finite and >= 0 (mm)")


def test_class_names_come_from_dataset_json_next_to_the_labels(folders, tmp_path):
    preds, refs = folders
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "tumour": 2},
        "file_ending": ".nii.gz", "numTraining": 1}))
    result = score_folders(preds, refs, verbose=False)
    assert result.class_names == ["background", "liver", "tumour"]
    assert result.per_case["a"][2].policy == "both_empty"


def test_classes_flag_sets_k_and_refuses_labels_beyond_it(folders, capsys):
    preds, refs = folders
    assert score_folders(preds, refs, classes=3, verbose=False).class_names[-1] == "label_2"
    save(refs / "a.nii.gz", box(value=3))
    line = one_line_error(capsys, ["score", str(preds), str(refs), "--classes", "3"])
    assert "a.nii.gz: label values [3] are outside 0..2" in line and "--classes" in line


def test_a_missing_prediction_is_named_and_refused_unless_allowed(folders, tmp_path, capsys):
    preds, refs = folders
    (preds / "b.nii.gz").unlink()
    save(preds / "stray.nii.gz", box())
    line = one_line_error(capsys, ["score", str(preds), str(refs)])
    assert "no prediction for 1 reference case(s) (b)" in line
    assert "no reference for 1 predicted case(s) (stray)" in line and "--allow-missing" in line
    out = tmp_path / "partial"
    assert main(["score", str(preds), str(refs), "--allow-missing", "-o", str(out)]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["missing"] == {"predictions": ["b"], "references": ["stray"]}
    assert list(doc["prediction"]["per_case"]) == ["a"]


def test_a_label_on_another_grid_is_refused_naming_both_files(folders, capsys):
    preds, refs = folders
    save(preds / "a.nii.gz", box(), oblique_affine(spacing=(0.7, 0.9, 2.0)))
    line = one_line_error(capsys, ["score", str(preds), str(refs)])
    assert str(preds / "a.nii.gz") in line and str(refs / "a.nii.gz") in line
    assert "spacing (0.7, 0.9, 2.0) differs" in line and "resample" in line


def test_a_prediction_without_orientation_is_refused_with_the_reason(folders, capsys):
    preds, refs = folders
    image = nib.Nifti1Image(box(), None)  # qform_code = sform_code = 0
    nib.save(image, preds / "a.nii.gz")
    line = one_line_error(capsys, ["score", str(preds), str(refs)])
    assert line.startswith(f"morse score: error: {preds / 'a.nii.gz'}: no orientation")
    assert "qform_code and sform_code are 0" in line and "reference image's header" in line


def test_unoriented_pairs_are_scored_with_the_pixdim_spacing(tmp_path, capsys):
    for folder in ("pred", "labels"):
        image = nib.Nifti1Image(box(), None)
        image.header.set_zooms((0.5, 0.5, 2.0))
        (tmp_path / folder).mkdir()
        nib.save(image, tmp_path / folder / "a.nii.gz")
    result = score_folders(tmp_path / "pred", tmp_path / "labels")
    assert result.per_case["a"][1]["dice"] == 1.0
    assert "no orientation" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["pred", "labels"])
def test_an_empty_folder_is_named(folders, tmp_path, capsys, which):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no maps here")
    preds, refs = folders
    argv = ["score", str(empty), str(refs)] if which == "pred" else ["score", str(preds),
                                                                       str(empty)]
    line = one_line_error(capsys, argv)
    assert f"{empty}: no NIfTI" in line


def test_a_map_of_probabilities_is_not_a_label_map(folders, capsys):
    preds, refs = folders
    nib.save(nib.Nifti1Image(box().astype(np.float32) * 0.6, oblique_affine()),
             preds / "a.nii.gz")
    line = one_line_error(capsys, ["score", str(preds), str(refs)])
    assert "a.nii.gz: has non-integer values" in line


def test_morses_extra_maps_are_not_cases_but_a_case_named_like_one_is(tmp_path):
    for name in ("a.nii.gz", "a_coarse.nii.gz", "a_probabilities.nii.gz", "b_points.nii"):
        save(tmp_path / name, box())
    assert sorted(label_files(tmp_path)) == ["a", "b_points"]
    save(tmp_path / "a.nii", box())
    with pytest.raises(DataError, match=r"a.nii.gz: case a is also a.nii; keep one"):
        label_files(tmp_path)


def test_the_files_left_unscored_are_named_in_one_line_with_their_count(folders, capsys):
    preds, refs = folders
    for name in ("a_coarse.nii.gz", "a_probabilities.nii.gz", "b_points.nii.gz"):
        save(preds / name, box())
    assert main(["score", str(preds), str(refs)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "skipped" in line]
    names = ", ".join(str(preds / n) for n in ("a_coarse.nii.gz", "a_probabilities.nii.gz",
                                               "b_points.nii.gz"))
    assert lines == [f"skipped 3 file(s), not scored: {names} (maps written beside a label map)"]
    doc = json.loads((preds / "metrics.json").read_text())
    assert list(doc["prediction"]["per_case"]) == ["a", "b"] and len(doc["skipped"]) == 3


def test_unmatched_files_scored_with_allow_missing_are_in_the_skipped_line(folders, tmp_path,
                                                                          capsys):
    preds, refs = folders
    (preds / "b.nii.gz").unlink()
    assert main(["score", str(preds), str(refs), "--allow-missing", "-o",
                 str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"skipped 1 file(s), not scored: {refs / 'b.nii.gz'} (cases in one folder only)" in out


def test_suffix_coarse_scores_the_coarse_maps_against_the_plain_references(folders, capsys):
    preds, refs = folders
    for case in ("a", "b"):
        save(preds / f"{case}_coarse.nii.gz", box())  # the backbone's map: exact here
    assert main(["score", str(preds), str(refs), "--suffix", "_coarse"]) == 0
    out = capsys.readouterr().out
    plain = ", ".join(str(preds / f"{c}.nii.gz") for c in ("a", "b"))
    assert f"skipped 2 file(s), not scored: {plain} (not named CASE_coarse)" in out
    doc = json.loads((preds / "score_coarse" / "metrics.json").read_text())
    assert doc["suffix"] == "_coarse" and list(doc["coarse"]["per_case"]) == ["a", "b"]
    assert doc["coarse"]["per_case"]["a"]["label_1"]["dice"] == 1.0
    assert not (preds / "metrics.json").exists()  # the plain maps' scores are not replaced


def test_a_suffix_no_file_has_is_named(folders, capsys):
    preds, refs = folders
    line = one_line_error(capsys, ["score", str(preds), str(refs), "--suffix", "_coarse"])
    assert f"{preds}: no NIfTI predicted label maps named CASE_coarse.nii.gz or .nii" in line
    line = one_line_error(capsys, ["score", str(preds), str(refs), "--suffix", "coarse"])
    assert line.endswith("--suffix coarse: give the text between the case name and the ending "
                         "with its separator, e.g. _coarse for CASE_coarse.nii.gz")
