"""Benchmark plumbing on a tiny setting: interleaved timings, ratios with their spread."""

from __future__ import annotations

from morse.bench import overhead


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
    for name in ("train", "infer"):
        assert row[f"{name}_time_ratio_min"] <= row[f"{name}_time_ratio"]
        assert row[f"{name}_time_ratio"] <= row[f"{name}_time_ratio_max"]
    assert row["train_memory_ratio"] == 1.0 and row["dense_experts_time_ratio"] > 0
    assert "interleaved" in overhead.format_rows({"tiny": row})
