"""The nnU-Net comparison's table, from ``morse score`` outputs (no nnU-Net needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.nnunet_compare import _unpaired_interval, foreground, table


def _metrics(path: Path, dice: list[float]) -> None:
    classes = {f"c{i}": {"dice": d, "hd95": 10 * (1 - d), "nsd_1mm": d,
                         "policy": "one_empty" if d == 0 else ""} for i, d in enumerate(dice)}
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"prediction": {"per_case": {"a": classes}}}))


def test_foreground_averages_classes_inside_the_case(tmp_path):
    _metrics(tmp_path / "s", [0.5, 1.0, 0.0])
    assert foreground(tmp_path / "s" / "metrics.json") == {"dice": 0.5, "hd95": 5.0,
                                                           "nsd_1mm": 0.5, "one_empty": 1.0}


def test_table_compares_independent_runs_and_pairs_the_warm_start_with_its_plain_run(tmp_path):
    for r, (plain, morse, warm) in enumerate([(0.5, 0.6, 0.55), (0.7, 0.6, 0.75),
                                              (0.6, 0.6, 0.65)]):
        for trainer, dice in (("P", plain), ("M", morse), ("W", warm)):
            _metrics(tmp_path / "scores" / "test" / f"{trainer}_r{r}", [dice])
    text = table(tmp_path, "P", "M", "W", "test")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("|")}
    assert "0.6000 ± 0.1000" in rows["`P`"]
    assert rows["MORSE − plain (independent runs)"].split("|")[3].strip().startswith("+0.0000")
    # every warm run is 0.05 above its own plain run: the paired interval has no width
    assert "+0.0500 [+0.0500, +0.0500]" in rows["warm start − its plain run (paired)"]
    assert "not informative" in text


def test_unpaired_interval_resamples_both_arms():
    diff, low, high = _unpaired_interval([0.5, 0.7, 0.6], [0.6, 0.6, 0.6])
    assert diff == pytest.approx(0.0) and low < 0 < high
