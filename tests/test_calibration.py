"""The render budget calibrated per trained run: the measurement, its storage, its use."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from morse.cli.main import main
from morse.errors import CheckpointError, DataError
from morse.inference.calibrate import calibrate_run
from morse.inference.trained import load_run
from morse.io.checkpoint import load_checkpoint, save_checkpoint
from morse.io.lock import FolderLock
from morse.model.calibration import calibrate, calibrate_files, pick_margin, rank_shares
from morse.model.settings import InferenceConfig
from morse.model.volumes import predict_volume

from helpers import TINY, make_dataset, small_morse


def test_the_picked_margin_is_the_smallest_rounded_one_keeping_the_share_below_it():
    margins = np.random.default_rng(0).exponential(1.0, 1000)
    for keep in (0.5, 0.9, 0.995, 1.0):
        margin = pick_margin(margins, keep)
        assert (margins < margin).mean() >= keep
        # one step of the third significant digit less keeps too few
        step = 10.0 ** (np.floor(np.log10(margin)) - 2)
        assert (margins < margin - step).mean() < keep
    assert pick_margin(np.zeros(0)) is None


def test_rank_shares_rank_each_slice_on_its_own_in_2d_and_the_volume_in_3d():
    margin = np.arange(8.0).reshape(2, 2, 2)
    assert sorted(rank_shares(margin, per_slice=True)[..., 0].ravel()) == [0, 0.25, 0.5, 0.75]
    assert sorted(rank_shares(margin, per_slice=False).ravel()) == [i / 8 for i in range(8)]


def _toy_inputs():
    images = [np.random.default_rng(k).standard_normal((1, 32, 32, 3)).astype(np.float32)
              for k in range(2)]
    return lambda: ((image, None) for image in images)


def test_the_margin_comes_from_flips_at_any_rank_and_keeps_the_fixed_budgets_labels():
    torch.manual_seed(0)
    model = small_morse(2, render_points=48, render_margin=3.0)
    inputs, settings = _toy_inputs(), InferenceConfig()
    result = calibrate(model, inputs, settings, keep=0.9)
    assert model.renderer.config.render_margin == 3.0  # the model's own budget is restored
    assert result.cases == 2 and result.cells == 2 * 32 * 32 * 3 and result.flips > 0
    assert result.kept >= 0.9 and result.rendered_share <= result.fixed_rendered_share
    assert sum(row["flips"] for row in result.bins) == result.flips
    assert sum(row["fixed_flips"] for row in result.bins) == result.fixed_flips > 0
    # the reference renders beyond the fixed budget's cap (2 steps x 48 of each 32 x 32
    # slice), so its flips are not cut where the cap cuts
    assert result.flips > result.fixed_flips and result.flip_ranks["99.5%"] > 96 / 1024
    # the measurement holds: predicting with the margin keeps the share of flipped labels
    fixed, calibrated = [], []
    for margin, out in ((None, fixed), (result.render_margin, calibrated)):
        model.renderer.config = dataclasses.replace(model.renderer.config, render_margin=margin)
        out += [predict_volume(model, image, settings) for image, _ in inputs()]
    flipped = np.concatenate([(f.rendered != f.coarse).ravel() for f in fixed])
    same = np.concatenate([(f.rendered == c.rendered).ravel() for f, c in zip(fixed, calibrated)])
    assert same[flipped].mean() == pytest.approx(result.kept)


def test_without_validation_cases_the_budget_stays_the_runs_default_said_in_one_line(tmp_path):
    said = []
    records = calibrate_files(tmp_path, {"last.pt": (1, small_morse)}, lambda: iter(()),
                              InferenceConfig(), 3.0, said.append)
    assert records == {} and not any(tmp_path.iterdir())
    assert said == ["no validation cases: the render budget is not calibrated; predictions keep "
                    "the run's model.render_margin=3"]


def _train(tmp_path, *extra):
    data = make_dataset(tmp_path / "Dataset009_Disc", cases=5)
    run = tmp_path / "run"
    assert main(["train", "nnunet_2d", f"data.root={data}", *TINY, "train.iterations=2",
                 "train.val_every=1", *extra, "-o", str(run)]) == 0
    return run


@pytest.mark.slow
def test_training_calibrates_its_checkpoints_and_morse_calibrate_measures_the_same(
        tmp_path, capsys):
    run = _train(tmp_path)
    assert "calibrated last.pt (step 2) on 1 validation case(s)" in capsys.readouterr().out
    written = json.loads((run / "calibration.json").read_text())
    assert set(written) == {"last.pt", "best.pt"}
    for name, record in written.items():
        assert load_checkpoint(run / name)["calibration"] == record
        assert record["kept"] >= 0.995 and record["step"] == load_run(run / name).step
    (run / "calibration.json").unlink()
    again = calibrate_run(run, checkpoint="last", device="cpu")
    assert again["last.pt"]["render_margin"] == written["last.pt"]["render_margin"]
    assert set(json.loads((run / "calibration.json").read_text())) == {"last.pt"}

    # predictions use it unless --budget says otherwise
    margin = written["best.pt"]["render_margin"]
    assert load_run(run).model.renderer.config.render_margin == margin
    assert load_run(run, budget="fixed").model.renderer.config.render_margin is None
    assert load_run(run, budget="default").model.renderer.config.render_margin == 3.0
    assert load_run(run, budget=1.5).budget()["budget"] == "margin"
    assert main(["evaluate", str(run), "--subset", "test", "--device", "cpu"]) == 0
    assert f"render budget calibrated: margin {margin:g}" in capsys.readouterr().out
    budget = json.loads((run / "metrics.json").read_text())["budget"]
    assert budget["budget"] == "calibrated" and budget["render_margin"] == margin
    assert 0 < budget["rendered_share"] < 1
    assert main(["evaluate", str(run), "--subset", "test", "--budget", "fixed"]) == 0
    assert json.loads((run / "metrics.json").read_text())["budget"]["budget"] == "fixed"
    assert main(["report", str(run), "--format", "md"]) == 0
    assert "Render budget fixed: no margin" in (run / "report.md").read_text()
    scan = tmp_path / "Dataset009_Disc" / "imagesTr" / "case0_0000.nii.gz"
    capsys.readouterr()
    assert main(["predict", str(run), str(scan), "-o", str(tmp_path / "out")]) == 0
    assert f"render budget calibrated: margin {margin:g}" in capsys.readouterr().err


@pytest.mark.slow
def test_old_checkpoints_without_calibration_load_with_the_default_budget(tmp_path):
    run = _train(tmp_path)
    state = load_checkpoint(run / "best.pt")
    del state["calibration"]
    save_checkpoint(run / "best.pt", state)
    loaded = load_run(run)
    assert loaded.calibration is None and loaded.budget()["budget"] == "default"
    assert "not calibrated" in loaded.budget()["note"]
    save_checkpoint(run / "best.pt", {**state, "calibration": {"render_margin": -1}})
    with pytest.raises(CheckpointError, match="calibrate the run again"):
        load_run(run)


def test_calibrate_refuses_a_folder_without_checkpoint_and_a_busy_run_in_one_line(
        tmp_path, capsys):
    assert main(["calibrate", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"morse calibrate: error: {tmp_path}: no last.pt or best.pt in this run folder; train "
        f"it first (morse train CONFIG -o {tmp_path})")
    with pytest.raises(DataError, match="no such run folder"):
        calibrate_run(tmp_path / "nowhere")
    (tmp_path / "last.pt").write_bytes(b"")
    with FolderLock(tmp_path, "morse train"):
        assert main(["calibrate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is in use by morse train" in err
