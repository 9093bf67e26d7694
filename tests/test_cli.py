"""The command line end to end on a tiny NIfTI dataset: train, evaluate, report, predict, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from morse.cli.main import main
from morse.config import load_config
from morse.errors import ConfigError

from helpers import TINY, make_dataset, write_config


def test_train_evaluate_report_predict_through_the_command_line(tmp_path, dataset, capsys):
    config = write_config(tmp_path / "tiny.yaml", dataset)
    run = tmp_path / "run"
    assert main(["train", str(config), *TINY, "-o", str(run)]) == 0
    for name in ("last.pt", "best.pt", "config.yaml", "curves.csv", "progress.png"):
        assert (run / name).is_file(), name
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["expert_width"] == 16

    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    for output in ("coarse", "rendered"):
        assert set(metrics[output]) >= {"per_case", "mean", "empty_policy"}
        assert "disc" in metrics[output]["mean"]
    assert metrics["distance_unit"] == "mm" and "nsd_1mm" in metrics["coarse"]["mean"]["disc"]
    printed = capsys.readouterr().out
    assert "coarse" in printed and "rendered" in printed and "HD95 (mm)" in printed

    assert main(["report", str(run)]) == 0
    assert "data:image/png;base64" in (run / "report.html").read_text()

    source = dataset / "imagesTr" / "case0_0000.nii.gz"
    out = tmp_path / "pred"
    assert main(["predict", str(run), str(source), "-o", str(out), "--probabilities",
                 "--points"]) == 0
    reference, predicted = nib.load(source), nib.load(out / "case0.nii.gz")
    assert predicted.shape == reference.shape
    np.testing.assert_allclose(predicted.affine, reference.affine, atol=1e-6)
    np.testing.assert_allclose(predicted.header.get_zooms(), (0.7, 0.9, 3.0), atol=1e-6)
    assert predicted.get_data_dtype() == np.uint8
    assert nib.load(out / "case0_probabilities.nii.gz").shape == (*reference.shape, 2)
    assert nib.load(out / "case0_points.nii.gz").get_fdata().sum() > 0

    before = (out / "case0.nii.gz").read_bytes()
    assert main(["predict", str(run), str(source), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "case0.nii.gz").read_bytes() == before


def test_a_second_train_into_a_finished_run_refuses_and_keeps_it(tmp_path, dataset, capsys):
    config = write_config(tmp_path / "tiny.yaml", dataset, iterations=1)
    run = tmp_path / "run"
    assert main(["train", str(config), *TINY, "-o", str(run)]) == 0
    before = (run / "last.pt").read_bytes()
    assert main(["train", str(config), *TINY, "-o", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (run / "last.pt").read_bytes() == before


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.itrations=3", "did you mean train.iterations"),
        ("train.lr=fast", "train.lr must be float"),
        ("model.experts=maybe", "model.experts must be true or false"),
        ("data.root=/no/such/folder", "/no/such/folder: data folder not found"),
    ],
)
def test_bad_config_or_data_ends_with_one_line_naming_the_key_or_file(
    tmp_path, dataset, capsys, override, message
):
    config = write_config(tmp_path / "tiny.yaml", dataset)
    assert main(["train", str(config), *TINY, override, "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="did you mean model.render_points"):
        load_config("demo", ["model.render_point=3"])
    with pytest.raises(ConfigError, match="model.train_points must be int or null"):
        load_config("demo", ["model.train_points=many"])
    with pytest.raises(ConfigError, match="presets: acdc_unet2d"):
        load_config("no-such-preset")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("demo", ["iterations"])


def test_broken_dataset_is_refused_before_training(tmp_path, dataset, capsys):
    (dataset / "labelsTr" / "case1.nii.gz").unlink()
    config = write_config(tmp_path / "tiny.yaml", dataset)
    assert main(["train", str(config), *TINY, "-o", str(tmp_path / "run")]) == 2
    assert "case1" in capsys.readouterr().err
    assert main(["check", str(dataset)]) == 1


def test_empty_folder_is_named(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["check", str(empty)]) == 1
    assert "dataset.json" in capsys.readouterr().out


def _run_cli(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "morse", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _step_of(run: Path) -> int:
    from morse.io.checkpoint import load_checkpoint

    try:
        return int(load_checkpoint(run / "last.pt")["step"])
    except Exception:
        return -1


@pytest.mark.slow
def test_killed_and_resumed_run_ends_with_identical_weights(tmp_path, dataset):
    iterations = 40
    config = write_config(tmp_path / "tiny.yaml", dataset, iterations=iterations)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _run_cli("train", str(config), *TINY, "-o", str(straight)).wait() == 0

    process = _run_cli("train", str(config), *TINY, "-o", str(killed))
    deadline = time.time() + 120
    while _step_of(killed) < 3 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stopped_at = _step_of(killed)
    assert 3 <= stopped_at < iterations, "the kill must land mid-run"
    resumed = _run_cli("train", "--resume", str(killed))
    assert resumed.wait() == 0, resumed.stderr.read().decode()

    from morse.io.checkpoint import load_checkpoint

    a = load_checkpoint(straight / "last.pt")
    b = load_checkpoint(killed / "last.pt")
    assert a["step"] == b["step"] == iterations
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    rows = (killed / "curves.csv").read_text().splitlines()[1:]
    steps = [int(row.split(",")[0]) for row in rows]
    assert steps == sorted(steps), "curves rows after the checkpoint were dropped on resume"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_training_through_torchrun(tmp_path, dataset):
    config = write_config(tmp_path / "tiny.yaml", dataset, iterations=3)
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "morse", "train",
         str(config), *TINY, "-o", str(run)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    from morse.io.checkpoint import load_checkpoint

    if result.returncode != 0:
        # gloo on CPU sometimes aborts a worker while tearing the group down (about 1 run in
        # 10, see test_distributed.py); accepted only when the run had finished and saved
        finished = (run / "last.pt").is_file() and load_checkpoint(run / "last.pt")["step"] == 3
        assert finished and "SIGABRT" in result.stderr, result.stderr[-2000:]
        warnings.warn("a DDP worker aborted in process-group teardown after the run finished",
                      stacklevel=1)
    state = load_checkpoint(run / "last.pt")
    assert state["step"] == 3
    assert not any(key.startswith("module.") for key in state["model"])
    assert "val_dice" in (run / "curves.csv").read_text().splitlines()[0]


def test_training_prints_the_split_saves_it_and_warns_about_tiny_subsets(tmp_path, capsys):
    data = make_dataset(tmp_path / "Dataset004", cases=3)
    config = write_config(tmp_path / "tiny.yaml", data, iterations=1)
    run = tmp_path / "run"
    assert main(["train", str(config), *TINY, "-o", str(run)]) == 0
    out, err = capsys.readouterr()
    split = json.loads((run / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == ["case0", "case1", "case2"]
    for name in ("training", "validation", "test"):
        assert f"{name:<10} 1 case: " in out
    assert "warning: the training subset holds 1 case" in err


def test_training_without_validation_cases_says_to_evaluate_last_pt(tmp_path, capsys):
    data = make_dataset(tmp_path / "Dataset005", cases=3)
    config = write_config(tmp_path / "tiny.yaml", data, iterations=1)
    run = tmp_path / "run"
    assert main(["train", str(config), *TINY, "data.split_fractions=[0.67,0,0.33]",
                 "-o", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "-inf" not in out and "no validation cases: evaluate last.pt" in out
    assert "warning: the validation subset is empty" in err
