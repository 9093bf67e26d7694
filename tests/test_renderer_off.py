"""A plain-backbone run (model.renderer=false) says so instead of showing empty renderer output."""

from __future__ import annotations

import json

from morse.cli.main import main

from helpers import TINY, write_config


def test_evaluate_and_predict_say_renderer_off(tmp_path, dataset, capsys):
    run = tmp_path / "run"
    config = write_config(tmp_path / "tiny.yaml", dataset)
    assert main(["train", str(config), *TINY, "model.renderer=false", "-o", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "renderer off" in out and "rendered" not in out
    doc = json.loads((run / "metrics.json").read_text())
    assert "coarse" in doc and "rendered" not in doc
    scan = str(next((dataset / "imagesTr").iterdir()))
    code = main(["predict", str(run), scan, "-o", str(tmp_path / "pred"), "--points"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "renderer is off" in err[0]
    assert not (tmp_path / "pred").exists()
    assert main(["report", str(run)]) == 0
