"""Inference knobs of a trained run: each setting scored by evaluate, timed, and tabulated."""

from __future__ import annotations

import json

import pytest

from benchmarks.knobs import Knob, format_knobs, knob_grid
from benchmarks.knobs import main as knobs_main
from morse.cli.main import main as morse_main

from helpers import TINY, make_dataset, write_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-step MORSE run on 32 x 32 x 6 discs (one validation case of 6 slices)."""
    root = tmp_path_factory.mktemp("knobs")
    config = write_config(root / "tiny.yaml", make_dataset(root / "Dataset001_Disc"), 2)
    run = root / "run"
    assert morse_main(["train", str(config), *TINY, "-o", str(run)]) == 0
    return run


def test_each_setting_is_scored_by_evaluate_and_renders_its_budget(tiny_run, tmp_path, capsys):
    out = tmp_path / "knobs"
    argv = [str(tiny_run), "--points", "8", "64", "--steps", "1", "2", "--margins", "none", "3",
            "--shares", "none", "--repeats", "1", "-o", str(out)]
    assert knobs_main(argv) == 0
    result = json.loads((out / "knobs.json").read_text())
    block = result["subsets"]["val"]
    rows = {Knob(r["points"], r["steps"], r["margin"], r["share"]).name: r for r in block["rows"]}
    assert list(rows) == [k.name for k in knob_grid([8, 64], [1, 2], [None, 3.0], [None])]
    for name, row in rows.items():
        scored = json.loads((out / "val" / name / "metrics.json").read_text())
        assert row["dice"] == scored["rendered"]["mean"]["foreground"]["dice"]
        assert row["voxels"] == 32 * 32 * 6
        if row["margin"] is None:  # the fixed budget renders N x steps cells of each slice
            assert row["rendered_voxels"] == 6 * row["points"] * row["steps"]
        else:
            fixed = rows[Knob(row["points"], row["steps"], None, None).name]
            assert row["rendered_voxels"] <= fixed["rendered_voxels"]
    assert block["baseline"]["dice"] == scored["coarse"]["mean"]["foreground"]["dice"]
    text = (out / "knobs.md").read_text()
    assert text == format_knobs(result) and text in capsys.readouterr().out
    assert "python -m benchmarks knobs " + " ".join(argv) in text
    assert "| fixed | none | 2 | " in text and "Backbone alone" in text
    assert (out / "knobs.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_without_renderer_is_refused(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", make_dataset(tmp_path / "Dataset001_Disc"), 1)
    run = tmp_path / "plain"
    assert morse_main(["train", str(config), *TINY, "model.renderer=false", "-o", str(run)]) == 0
    with pytest.raises(SystemExit) as exit:
        knobs_main([str(run), "--repeats", "1"])
    assert exit.value.code == 2 and "the renderer is off" in capsys.readouterr().err
