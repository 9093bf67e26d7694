"""Training's output sent to a file: the plan, one line per logging interval, train.log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from morse.training.lines import interval_line

from helpers import TINY, write_config


def _train_to_file(config: Path, run: Path, log: Path, *extra: str) -> str:
    """``morse train`` with stdout and stderr sent to ``log`` (not a terminal); its text."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path.cwd()))
    with log.open("w") as handle:
        result = subprocess.run(
            [sys.executable, "-m", "morse", "train", str(config), *TINY, *extra, "-o", str(run)],
            stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=300,
        )
    text = log.read_text()
    assert result.returncode == 0, text[-2000:]
    return text


@pytest.mark.slow
def test_train_sent_to_a_file_writes_one_line_per_interval_and_the_same_train_log(
    dataset, tmp_path
):
    config = write_config(tmp_path / "tiny.yaml", dataset, iterations=3)
    run = tmp_path / "run"
    text = _train_to_file(config, run, tmp_path / "out.log")
    assert "\r" not in text  # no progress-bar refreshes
    steps = [line for line in text.splitlines() if line.startswith("step ") and " loss " in line]
    assert [line.split()[1] for line in steps] == ["1/3", "2/3", "3/3"]
    assert all(" it/s ETA " in line and "coarse_ce" in line for line in steps)
    plan = [line for line in text.splitlines() if line.startswith("plan: 2D slices across RAS")]
    assert len(plan) == 1 and " mm, padded to " in plan[0]
    assert any(line.startswith("cases: 3 training") for line in text.splitlines())

    saved = (run / "train.log").read_text().splitlines()
    assert saved[0].startswith("started at step 0, ")
    assert saved[1] == plan[0]
    assert [line for line in saved if line.startswith("step ") and " loss " in line] == steps
    assert saved[-1].startswith("finished at step 3 in ")
    assert "\r" not in (run / "train.log").read_text()


@pytest.mark.slow
def test_resume_appends_to_train_log(dataset, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", dataset, iterations=2)
    run = tmp_path / "run"
    _train_to_file(config, run, tmp_path / "first.log", "train.iterations=2")
    first = (run / "train.log").read_text()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path.cwd()))
    # a finished run resumes to its own last step: nothing to train, one more header
    result = subprocess.run([sys.executable, "-m", "morse", "train", "--resume", str(run)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    again = (run / "train.log").read_text()
    assert again.startswith(first)
    assert again[len(first):].startswith("resumed at step 2, ")


def test_interval_line_names_step_loss_parts_speed_and_eta():
    row = {"loss": 1.0, "coarse_ce": 0.5, "coarse_dice": 0.25, "lr": 0.01, "it_per_s": 2.0}
    line = interval_line(10, 30, row)
    assert line.startswith("step 10/30 loss 1.0000 (coarse_ce 0.5000, coarse_dice 0.2500)")
    assert line.endswith("2.00 it/s ETA 0:00:10")
    assert interval_line(1, 3, {**row, "it_per_s": 0.0}).endswith("ETA ?")


def test_train_applies_train_threads(dataset, tmp_path, monkeypatch):
    import torch

    from morse.config import load_config
    from morse.training.loop import train

    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: calls[-1] if calls else 2)
    config = write_config(tmp_path / "tiny.yaml", dataset, iterations=1)
    cfg = load_config(str(config), [*TINY, "train.threads=3"])
    train(cfg, tmp_path / "run", progress=False)
    assert calls[0] == 3
    assert "1 step of batch 2 on cpu, 3 CPU threads" in (tmp_path / "run" / "train.log").read_text()
