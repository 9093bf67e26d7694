"""The whole nnU-Net workflow through the command line on slices that are not multiples of 32:
check, train nnunet_2d, evaluate (split test subset and imagesTs), predict, score; and
``morse score`` on ``morse predict``'s files agrees with ``morse evaluate`` on imagesTs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from morse.cli.main import main
from morse.config import load_config
from morse.errors import DataError
from morse.inference.files import _check_oriented

from helpers import TINY, add_test_set, make_dataset

SHAPE = (20, 28, 3)  # 20 x 28 slices: the backbones need 32, the 2D path pads them itself


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> dict:
    """check, train and evaluate once; the outputs of each step for the tests below."""
    tmp = tmp_path_factory.mktemp("workflow")
    data = add_test_set(make_dataset(tmp / "Dataset003_Disc", cases=5, shape=SHAPE),
                        ("case3", "case4"))
    steps = {"data": data, "run": tmp / "run", "tmp": tmp}
    steps["check"] = main(["check", str(data)])
    assert main(["train", "nnunet_2d", f"data.root={data}", *TINY, "train.iterations=2",
                 "train.val_every=2", "data.split_fractions=[0.34,0.33,0.33]",
                 "-o", str(steps["run"])]) == 0
    steps["evaluate"] = main(["evaluate", str(steps["run"])])
    return steps


def test_check_counts_training_and_labelled_test_cases(workflow, capsys):
    assert workflow["check"] == 0
    assert main(["check", str(workflow["data"])]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        "Dataset003_Disc: 3 training cases, 2 test cases (2 labelled), 0 problems")


def test_the_preset_is_a_2d_unet_with_morse_on_and_no_slice_size():
    cfg = load_config("nnunet_2d")
    assert (cfg.data.format, cfg.data.spatial_dims, cfg.model.backbone) == ("nnunet", 2, "unet")
    assert cfg.model.renderer and cfg.data.slice_size is None


def test_slices_that_are_not_multiples_of_32_train_without_a_setting(workflow):
    config = (workflow["run"] / "config.yaml").read_text()
    assert "slice_size: null" in config and (workflow["run"] / "last.pt").is_file()


def test_plain_evaluate_scores_the_split_and_imagests_under_their_headings(workflow, capsys):
    run = workflow["run"]
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    split = out.index("test subset of the training split (1 case(s))")
    held_out = out.index(f"held-out set {workflow['data'] / 'imagesTs'} (2 case(s))")
    assert split < held_out
    assert json.loads((run / "metrics.json").read_text())["rendered"]["n_cases"] == 1
    heldout = json.loads((run / "eval_imagesTs" / "metrics.json").read_text())
    assert sorted(heldout["rendered"]["per_case"]) == ["case3", "case4"]
    assert heldout["images"] == str(workflow["data"] / "imagesTs")


def _predict(workflow: dict, out: Path, *extra: str) -> None:
    images = sorted(str(p) for p in (workflow["data"] / "imagesTs").iterdir())
    assert main(["predict", str(workflow["run"]), *images, "-o", str(out), *extra]) == 0


def _per_case(metrics: Path, output: str) -> dict:
    return json.loads(metrics.read_text())[output]["per_case"]


def test_score_of_predict_files_equals_evaluate_on_imagests(workflow, capsys):
    predictions = workflow["tmp"] / "predictions"
    _predict(workflow, predictions, "--coarse")
    err = capsys.readouterr().err
    assert "[1/2] case3: " in err and "[2/2] case4: " in err  # one line per case, with time
    assert main(["score", str(predictions), str(workflow["data"] / "labelsTs")]) == 0
    scored = _per_case(predictions / "metrics.json", "prediction")
    evaluated = _per_case(workflow["run"] / "eval_imagesTs" / "metrics.json", "rendered")
    assert scored.keys() == evaluated.keys() == {"case3", "case4"}
    for case, classes in evaluated.items():
        for metric, value in classes["disc"].items():
            expected = pytest.approx(value, rel=1e-6) if metric != "policy" else value
            assert scored[case]["disc"][metric] == expected, (case, metric)


def test_coarse_maps_score_as_evaluates_coarse_output(workflow, tmp_path):
    predictions = tmp_path / "predictions"
    _predict(workflow, predictions, "--coarse")
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    for case in ("case3", "case4"):
        shutil.copy(predictions / f"{case}_coarse.nii.gz", coarse / f"{case}.nii.gz")
        reference = nib.load(predictions / f"{case}.nii.gz")
        written = nib.load(coarse / f"{case}.nii.gz")
        np.testing.assert_allclose(written.affine, reference.affine)
    assert main(["score", str(coarse), str(workflow["data"] / "labelsTs")]) == 0
    scored = _per_case(coarse / "metrics.json", "prediction")
    evaluated = _per_case(workflow["run"] / "eval_imagesTs" / "metrics.json", "coarse")
    for case in evaluated:
        assert scored[case]["disc"]["dice"] == pytest.approx(evaluated[case]["disc"]["dice"])


def test_suffix_coarse_scores_predicts_coarse_maps_as_evaluate_scores_coarse(workflow, tmp_path,
                                                                           capsys):
    predictions = tmp_path / "predictions"
    _predict(workflow, predictions, "--coarse", "--points")
    capsys.readouterr()
    assert main(["score", str(predictions), str(workflow["data"] / "labelsTs"), "--suffix",
                 "_coarse"]) == 0
    assert "skipped 4 file(s), not scored: " in capsys.readouterr().out
    scored = _per_case(predictions / "score_coarse" / "metrics.json", "coarse")
    evaluated = _per_case(workflow["run"] / "eval_imagesTs" / "metrics.json", "coarse")
    assert scored.keys() == evaluated.keys() == {"case3", "case4"}
    for case in evaluated:
        assert scored[case]["disc"]["dice"] == pytest.approx(evaluated[case]["disc"]["dice"])


def test_held_out_evaluation_writes_example_slices_the_report_shows_under_their_heading(
        workflow):
    run = workflow["run"]
    with np.load(run / "eval_imagesTs" / "examples.npz") as examples:
        assert set(examples["case_id"]) == {"case3", "case4"}
        assert {"image", "truth", "coarse", "rendered", "points"} <= set(examples.files)
        truth = nib.load(workflow["data"] / "labelsTs" / "case3.nii.gz").get_fdata()
        first = list(examples["case_id"]).index("case3")
        index = int(examples["slice"][first])
        np.testing.assert_array_equal(examples["truth"][first], truth[..., index])
    assert main(["report", str(run), "--format", "md"]) == 0
    page = (run / "report.md").read_text()
    heading = page.index("## Held-out set: imagesTs")
    assert page.index("## Examples") < heading
    assert "report_files/eval_imagesTs_example_000.png" in page[heading:]


def test_any_held_out_pair_is_scored_alone_into_the_given_folder(workflow, tmp_path, capsys):
    images, labels = tmp_path / "scans", tmp_path / "truth"
    shutil.copytree(workflow["data"] / "imagesTs", images)
    shutil.copytree(workflow["data"] / "labelsTs", labels)
    out = tmp_path / "out"
    assert main(["evaluate", str(workflow["run"]), "--subset", "heldout", "--images",
                 str(images), "--labels", str(labels), "-o", str(out)]) == 0
    assert "test subset" not in capsys.readouterr().out
    assert _per_case(out / "metrics.json", "rendered") == _per_case(
        workflow["run"] / "eval_imagesTs" / "metrics.json", "rendered")


def _error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_held_out_faults_are_one_line_each(workflow, tmp_path, capsys):
    run, data = str(workflow["run"]), workflow["data"]
    line = _error(capsys, ["evaluate", run, "--images", str(data / "imagesTs")])
    assert "--images and --labels go together" in line
    labels = tmp_path / "labels"
    shutil.copytree(data / "labelsTs", labels)
    (labels / "case4.nii.gz").unlink()
    line = _error(capsys, ["evaluate", run, "--subset", "heldout", "--images",
                           str(data / "imagesTs"), "--labels", str(labels)])
    assert f"{labels}: no label map for image case(s) ['case4']" in line
    moved = nib.load(data / "labelsTs" / "case4.nii.gz")
    affine = moved.affine.copy()
    affine[:3, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(moved.dataobj), affine), labels / "case4.nii.gz")
    line = _error(capsys, ["evaluate", run, "--subset", "heldout", "--images",
                           str(data / "imagesTs"), "--labels", str(labels)])
    assert "case4_0000.nii.gz: affine (origin/direction) differs from its reference" in line
    assert str(labels / "case4.nii.gz") in line


def test_predict_refuses_a_scan_without_orientation_when_the_model_resamples(
    workflow, tmp_path, capsys
):
    scan = nib.load(workflow["data"] / "imagesTs" / "case3_0000.nii.gz")
    bare = tmp_path / "bare_0000.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(scan.dataobj), None), bare)
    line = _error(capsys, ["predict", str(workflow["run"]), str(bare), "-o", str(tmp_path)])
    assert f"{bare}: no orientation in its header" in line and "set the scan's orientation" in line
    assert not (tmp_path / "bare.nii.gz").exists()


def test_a_scan_without_orientation_is_segmented_as_stored_with_a_warning_when_grids_are_kept(
    tmp_path, capsys
):
    bare = tmp_path / "bare.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), None), bare)
    _check_oriented(bare, needed=False)
    assert f"warning: {bare}: no orientation" in capsys.readouterr().err
    with pytest.raises(DataError, match="no orientation"):
        _check_oriented(bare, needed=True)


def test_predict_gives_a_scan_stored_in_another_axis_order_the_same_labels(workflow, tmp_path):
    """The run resamples to RAS at its planned spacing (recorded in the checkpoint); the same
    scan stored transposed and flipped is labelled voxel for voxel alike, on its own grid."""
    from morse.data.geometry import AxisMap
    from morse.inference.trained import load_run

    assert load_run(workflow["run"]).geometry["orientation"] == "RAS"
    scan = nib.load(workflow["data"] / "imagesTs" / "case3_0000.nii.gz")
    axes = AxisMap((2, 0, 1), (False, True, False))
    moved = nib.Nifti1Image(axes.forward(np.asarray(scan.dataobj)),
                            axes.affine(scan.affine, scan.shape))
    nib.save(moved, tmp_path / "moved_0000.nii.gz")
    for name in ("case3_0000", "moved_0000"):
        source = tmp_path / f"{name}.nii.gz"
        if name == "case3_0000":
            shutil.copy(workflow["data"] / "imagesTs" / source.name, source)
        assert main(["predict", str(workflow["run"]), str(source), "-o",
                     str(tmp_path / "out"), "--coarse"]) == 0
    for suffix in ("", "_coarse"):
        first = np.asarray(nib.load(tmp_path / "out" / f"case3{suffix}.nii.gz").dataobj)
        second = nib.load(tmp_path / "out" / f"moved{suffix}.nii.gz")
        assert np.array_equal(axes.forward(first), np.asarray(second.dataobj))
        assert np.allclose(second.affine, moved.affine)


def test_predict_with_tta_scores_as_evaluate_with_tta_and_metrics_record_it(workflow, tmp_path):
    run = str(workflow["run"])
    out = tmp_path / "eval_tta"
    assert main(["evaluate", run, "--subset", "heldout", "--tta", "-o", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["tta"] is True
    plain = workflow["run"] / "eval_imagesTs" / "metrics.json"
    assert json.loads(plain.read_text())["tta"] is False
    predictions = tmp_path / "predictions"
    _predict(workflow, predictions, "--tta")
    assert main(["score", str(predictions), str(workflow["data"] / "labelsTs")]) == 0
    scored = _per_case(predictions / "metrics.json", "prediction")
    evaluated = _per_case(out / "metrics.json", "rendered")
    for case in ("case3", "case4"):
        assert scored[case]["disc"]["dice"] == pytest.approx(evaluated[case]["disc"]["dice"])
    assert [evaluated[c]["disc"]["dice"] for c in ("case3", "case4")] != [
        _per_case(plain, "rendered")[c]["disc"]["dice"] for c in ("case3", "case4")]
