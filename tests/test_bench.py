"""Benchmark plumbing on a tiny setting: interleaved timings, ratios with their spread."""

from __future__ import annotations

from morse.bench import overhead, volume
from morse.data.volume import DataError


def test_interleaved_timings_alternate_and_give_one_time_per_repeat():
    calls = []
    times = overhead._interleaved(
        {"plain": lambda: calls.append("A"), "morse": lambda: calls.append("B")},
        overhead.torch.device("cpu"), repeats=3, warmup=1,
    )
    assert calls == ["A", "B"] * 4
    assert [len(v) for v in times.values()] == [3, 3]


def test_overhead_rows_hold_ratios_and_spread(monkeypatch):
    monkeypatch.setitem(overhead.SETTINGS, "tiny", overhead.Setting("tiny", 2, 32, 1, 3, 0.25))
    monkeypatch.setattr(overhead, "_peak_memory_child", lambda *args: 100.0)
    row = overhead.run_overhead(["tiny"], repeats=2)["tiny"]
    for name in ("train", "infer", "infer_fixed", "infer_bf16"):
        name, suffix = name.split("_")[0], name[5:]
        key = f"{name}_time_ratio{suffix}"
        assert row[f"{key}_min"] <= row[key] <= row[f"{key}_max"]
    assert row["train_memory_ratio"] == 1.0 and row["dense_experts_time_ratio"] > 0
    # untrained weights: every cell is uncertain, both budgets render 2 steps x 12.5% of 32^2
    assert row["points_morse"] == row["points_fixed"] == 256
    assert "bf16 renderer" in overhead.format_rows({"tiny": row})


def test_volume_rows_are_skipped_with_a_note_without_the_demo_data(monkeypatch):
    def absent(*args, **kwargs):
        raise DataError("/nowhere: no such folder")

    monkeypatch.setattr(volume, "load_eval_volumes", absent)
    row = volume.run_volume()
    assert row == {"note": "skipped (no demo data): /nowhere: no such folder"}
    assert "skipped" in volume.format_volume(row)
