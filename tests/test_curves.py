"""CurveLog: columns that appear later, resume and truncation; plot_curves never fails."""

from __future__ import annotations

import math

import numpy as np
import pytest

from morse.training.curves import CurveLog, plot_curves, read_curve_columns, read_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_new_columns_rewrite_header_and_leave_gaps(tmp_path):
    path = tmp_path / "curves.csv"
    log = CurveLog(path)
    log.append({"step": 0, "loss": 1.0, "lr": 1e-3})
    log.append({"step": 1, "loss": 0.5, "lr": 1e-3})
    log.log(2, loss=0.25, val_dice=0.6, lr=5e-4)  # val_dice first appears here
    log.append({"step": 3, "lr": 5e-4})  # loss missing
    lines = path.read_text().splitlines()
    assert lines[0] == "step,loss,lr,val_dice"
    assert lines[1] == "0,1.0,0.001,"
    assert lines[3] == "2,0.25,0.0005,0.6"
    assert lines[4] == "3,,0.0005,"
    columns, rows = read_curves(path)
    assert columns == ["step", "loss", "lr", "val_dice"]
    assert rows[3] == {"step": 3, "loss": None, "lr": 5e-4, "val_dice": None}
    cols = read_curve_columns(path)
    np.testing.assert_array_equal(cols["step"], [0, 1, 2, 3])
    assert np.isnan(cols["val_dice"][[0, 1, 3]]).all() and cols["val_dice"][2] == 0.6


def test_values_round_trip_exactly(tmp_path):
    log = CurveLog(tmp_path / "c.csv")
    values = {"step": 7, "loss": 1 / 3, "a": np.float32(0.1), "b": float("nan")}
    log.append(values)
    _, rows = read_curves(tmp_path / "c.csv")
    assert rows[0]["loss"] == 1 / 3
    assert rows[0]["a"] == float(np.float32(0.1))
    assert math.isnan(rows[0]["b"])


def test_bad_rows_are_refused(tmp_path):
    log = CurveLog(tmp_path / "c.csv")
    with pytest.raises(ValueError, match="step"):
        log.append({"loss": 1.0})
    with pytest.raises(ValueError, match="loss"):
        log.append({"step": 1, "loss": "high"})


def test_resume_keeps_rows_and_truncates(tmp_path):
    path = tmp_path / "curves.csv"
    log = CurveLog(path)
    for step in range(0, 60, 10):
        log.log(step, loss=1.0 / (step + 1))
    log.log(50, val_dice=0.7)

    resumed = CurveLog(path)  # e.g. a new process resuming from the checkpoint at step 30
    assert len(resumed) == 7 and resumed.last_step == 50
    assert resumed.truncate_after(30) == 3
    assert [r["step"] for r in read_curves(path)[1]] == [0, 10, 20, 30]
    resumed.log(40, loss=0.01)
    _, rows = read_curves(path)
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40]
    assert rows[-1]["loss"] == 0.01
    assert read_curves(path)[0] == ["step", "loss", "val_dice"]  # columns are kept
    assert resumed.truncate_after(100) == 0


def test_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "curves.csv"
    path.write_text("step,loss\n0,1.0\n1,0.5\n2,0.2")  # crash while writing step 2
    log = CurveLog(path)
    assert [r["step"] for r in log.rows] == [0, 1]
    log.log(2, loss=0.25)
    assert path.read_text() == "step,loss\n0,1.0\n1,0.5\n2,0.25\n"


def test_missing_or_empty_file_reads_empty(tmp_path):
    assert read_curves(tmp_path / "nope.csv") == ([], [])
    (tmp_path / "empty.csv").write_text("")
    assert read_curves(tmp_path / "empty.csv") == ([], [])


def test_plot_curves_writes_png(tmp_path):
    path = tmp_path / "curves.csv"
    log = CurveLog(path)
    rng = np.random.default_rng(0)
    for step in range(120):  # > 100 points: raw line plus moving average
        row = {
            "step": step,
            "loss": 2.0 / (step + 1) + 0.1 * rng.random(),
            "loss_coarse": 1.0 / (step + 1),
            "lr": 1e-3 * 0.99**step,
        }
        if step % 40 == 39:
            row["val_dice"] = 0.5 + step / 500
        log.append(row)
    out = plot_curves(path, tmp_path / "progress.png")
    assert out == tmp_path / "progress.png"
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_plot_curves_survives_all_missing_columns(tmp_path):
    path = tmp_path / "curves.csv"
    path.write_text("step,loss,val_dice,lr\n0,,,\n1,,,\n")
    assert plot_curves(path, tmp_path / "a.png").read_bytes().startswith(PNG_MAGIC)
    path.write_text("step,loss,val_dice\n")  # header only
    assert plot_curves(path, tmp_path / "b.png").read_bytes().startswith(PNG_MAGIC)
    path.write_text("step,loss\n0,-1.0\n1,nan\n")  # non-positive loss: no log scale, nan skipped
    assert plot_curves(path, tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)
