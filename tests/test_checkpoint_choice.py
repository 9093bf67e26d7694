"""The checkpoint a run is scored with is an explicit setting, recorded in the run and results."""

from __future__ import annotations

import json

import pytest
import yaml

from morse.cli.main import main
from morse.errors import DataError
from morse.inference.trained import resolve_checkpoint
from morse.io.checkpoint import load_checkpoint

from helpers import TINY, make_dataset, write_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step run with validation cases: best.pt (validated at steps 2 and 3) and last.pt."""
    root = tmp_path_factory.mktemp("choice")
    config = write_config(root / "tiny.yaml", make_dataset(root / "Dataset001_Disc"), 3)
    run = root / "run"
    assert main(["train", str(config), *TINY, "train.val_every=2", "-o", str(run)]) == 0
    return root, config, run


def _scored(folder) -> dict:
    return json.loads((folder / "metrics.json").read_text())["checkpoint"]


def test_default_scores_best_and_records_it(trained):
    _, _, run = trained
    assert main(["evaluate", str(run), "-o", str(run / "scored_best")]) == 0
    best_step = load_checkpoint(run / "best.pt")["step"]
    assert _scored(run / "scored_best") == {"file": "best.pt", "step": best_step}


def test_the_command_line_can_score_last(trained):
    _, _, run = trained
    assert main(["evaluate", str(run), "--checkpoint", "last", "-o", str(run / "last")]) == 0
    assert _scored(run / "last") == {"file": "last.pt", "step": 3}


def test_the_runs_setting_picks_last(trained, tmp_path):
    root, config, _ = trained
    run = tmp_path / "run_last"
    assert main(["train", str(config), *TINY, "eval.checkpoint=last", "-o", str(run)]) == 0
    assert resolve_checkpoint(run).name == "last.pt"


def test_a_run_without_validation_records_last(tmp_path, capsys):
    config = write_config(tmp_path / "t.yaml", make_dataset(tmp_path / "Dataset002_Disc"), 2)
    run = tmp_path / "run"
    argv = ["train", str(config), *TINY, "data.split_fractions=[0.8,0.0,0.2]", "-o", str(run)]
    assert main(argv) == 0
    assert "eval.checkpoint is set to last" in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["eval"]["checkpoint"] == "last"
    assert not (run / "best.pt").exists()
    assert main(["evaluate", str(run)]) == 0
    assert _scored(run)["file"] == "last.pt"


def test_asking_for_a_missing_best_names_the_fix(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(DataError, match="--checkpoint last"):
        resolve_checkpoint(tmp_path, "best")


@pytest.mark.parametrize("preset", ["synapse_unet2d", "synapse_transunet"])
def test_synapse_presets_follow_transunets_protocol(preset):
    from morse.config import load_config

    cfg = load_config(preset)
    assert cfg.data.split_fractions == [1.0, 0.0, 0.0]
    assert cfg.eval.checkpoint == "last"
