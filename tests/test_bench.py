"""Benchmark plumbing on a tiny setting: interleaved timings, ratios with their spread."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from benchmarks import overhead, trained, volume
from benchmarks.__main__ import main as bench_main
from morse.cli.main import main
from morse.errors import DataError
from morse.inference.trained import load_run

from helpers import TINY, make_dataset


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
    for name in ("train", "train_fp32", "infer", "infer_fixed", "infer_fp32"):
        name, suffix = name.split("_")[0], name[5:]
        key = f"{name}_time_ratio{suffix}"
        assert row[f"{key}_min"] <= row[key] <= row[f"{key}_max"]
    assert row["train_memory_ratio"] == 1.0 and row["dense_experts_time_ratio"] > 0
    # untrained weights: every cell is uncertain, both budgets render 2 steps x 12.5% of 32^2
    assert row["points_morse"] == row["points_fixed"] == 256
    assert "fp32 renderer" in overhead.format_rows({"tiny": row})


def test_renderer_options_reach_every_morse_row_and_the_memory_probe(monkeypatch):
    tiny = overhead.Setting("tiny", 2, 32, 1, 3, 0.25)
    monkeypatch.setitem(overhead.SETTINGS, "tiny", tiny)
    probed = []
    monkeypatch.setattr(overhead, "_peak_memory_child",
                        lambda setting, *args: probed.append(setting) or 100.0)
    built = []
    model = overhead._model
    monkeypatch.setattr(overhead, "_model",
                        lambda *args, **kw: built.append(model(*args, **kw)) or built[-1])
    row = overhead.run_overhead(["tiny"], repeats=1, warmup=0,
                                renderer_options={"expert_width": 8, "head_width": 12})["tiny"]
    assert row["renderer"] == {"expert_width": 8, "head_width": 12}
    renderers = [m.renderer for m in built if m.renderer is not None]
    assert renderers and {(r.config.expert_width, r.config.head_width) for r in renderers} == {
        (8, 12)}
    assert {s.renderer for s in probed} == {(("expert_width", 8), ("head_width", 12))}
    assert "renderer: expert_width=8, head_width=12" in overhead.format_rows({"tiny": row})


def test_the_memory_probe_builds_the_setting_it_is_given_in_a_fresh_process(monkeypatch):
    tiny = overhead.Setting("tiny", 2, 32, 1, 3, 0.25, (("expert_width", 8),))
    # a probe run in this process would call the patched function; a fresh one imports its own
    monkeypatch.setattr(overhead, "_memory_probe",
                        lambda *args: pytest.fail("the probe ran in the test's process"))
    assert overhead._peak_memory_child(tiny, True, "cpu") >= 0
    # the child builds the setting it is given, renderer options included: a misspelt one
    # fails there, by name
    misspelt = replace(tiny, renderer=(("expert_wdith", 8),))
    with pytest.raises(subprocess.CalledProcessError) as failed:
        overhead._peak_memory_child(misspelt, True, "cpu")
    assert "unknown renderer option 'expert_wdith'" in failed.value.stderr


def test_renderer_options_must_be_field_value_pairs(capsys):
    with pytest.raises(SystemExit):
        bench_main(["overhead", "--renderer", "expert_width"])
    assert "write FIELD=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["knobs", "flips"])
def test_experiment_scripts_run_under_python_m_benchmarks(script, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_main([script, "--help"])
    assert stop.value.code == 0
    assert f"python -m benchmarks {script}" in capsys.readouterr().out


def test_volume_rows_are_skipped_with_a_note_without_the_demo_data(monkeypatch):
    def absent(*args, **kwargs):
        raise DataError("/nowhere: no such folder")

    monkeypatch.setattr(volume, "load_eval_volumes", absent)
    row = volume.run_volume()
    assert row == {"note": "skipped (no demo data): /nowhere: no such folder"}
    assert "skipped" in volume.format_volume(row)


def test_trained_rows_time_a_runs_model_on_its_own_slices(tmp_path):
    data = make_dataset(tmp_path / "Dataset007_Disc", cases=3)
    assert main(["train", "nnunet_2d", f"data.root={data}", *TINY, "train.iterations=2",
                 "data.split_fractions=[0.34,0.33,0.33]", "-o", str(tmp_path / "run")]) == 0
    run = load_run(tmp_path / "run")
    batch = trained.network_batch(run, batch=3)
    assert batch.shape == (3, 1, 32, 32)  # 32 x 32 slices, already a multiple of 32
    row = trained.run_trained(str(tmp_path / "run"), repeats=2, warmup=0)
    for suffix in ("", "_fixed", "_fp32"):
        key = f"infer_time_ratio{suffix}"
        assert row[f"{key}_min"] <= row[key] <= row[f"{key}_max"]
    assert row["points_morse"] == row["points_fp32"] <= row["points_fixed"]
    assert row["render_precision"] == "auto" and load_run(row["run"]).model.renderer.config == (
        run.model.renderer.config)  # the run on disk is left as it was
    assert "points/image" in trained.format_trained(row)


def test_trained_rows_of_a_3d_run_time_one_window_of_its_patch_size(tmp_path):
    data = make_dataset(tmp_path / "Dataset008_Disc", cases=3)
    assert main(["train", "unet3d", f"data.root={data}", *TINY, "train.iterations=2",
                 "data.patch_size=[16,16,16]", "model.backbone_options={width: 0.25}",
                 "data.split_fractions=[0.34,0.33,0.33]", "-o", str(tmp_path / "run")]) == 0
    assert trained.network_batch(load_run(tmp_path / "run")).shape == (1, 1, 16, 16, 16)
    row = trained.run_trained(str(tmp_path / "run"), repeats=1, warmup=0)
    assert row["input"] == [1, 1, 16, 16, 16] and row["points_morse"] <= row["points_fixed"]
