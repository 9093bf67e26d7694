"""Benchmark plumbing on a tiny setting: interleaved timings, ratios with their spread."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import pytest

from benchmarks import margins, overhead, trained, volume
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


def _tiny_run(tmp_path, preset: str, *extra: str):
    """A run of 2 steps on 3 disc cases, one of them for validation (so it is calibrated)."""
    data = make_dataset(tmp_path / f"Dataset007_{preset}", cases=3)
    out = tmp_path / preset
    assert main(["train", preset, f"data.root={data}", *TINY, "train.iterations=2",
                 "data.split_fractions=[0.34,0.33,0.33]", *extra, "-o", str(out)]) == 0
    return out


def test_trained_rows_time_a_runs_model_on_its_own_slices(tmp_path):
    run_dir = _tiny_run(tmp_path, "nnunet_2d")
    run = load_run(run_dir)
    batch = trained.network_batch(run, batch=3)
    assert batch.shape == (3, 1, 32, 32)  # 32 x 32 slices, already a multiple of 32
    row = trained.run_trained(str(run_dir), repeats=2, warmup=0)
    assert row["variants"] == ["plain", "calibrated", "default", "fixed", "fp32"]
    for name in row["variants"][1:]:
        key = f"infer_time_ratio_{name}"
        assert row[f"{key}_min"] <= row[key] <= row[f"{key}_max"]
    assert row["points_default"] == row["points_fp32"] <= row["points_fixed"]
    assert row["points_calibrated"] <= row["points_fixed"]
    # the renderer's arithmetic is counted (its products too, not the backbone's alone)
    assert 1 < row["flops_ratio_calibrated"] <= row["flops_ratio_fixed"]
    assert row["calibrated_margin"] == run.calibration["render_margin"]
    assert row["render_precision"] == "auto" and load_run(row["run"]).model.renderer.config == (
        run.model.renderer.config)  # the run on disk is left as it was
    assert "points/image" in trained.format_trained(row)


def test_flops_count_in_place_products_too():
    import torch

    a, b, out = torch.randn(6, 5), torch.randn(5, 4), torch.zeros(6, 4)
    # the renderer accumulates split weights with addmm_, which torch's counter leaves out
    assert trained.flops(lambda: out.addmm_(a, b)) == 2 * 6 * 5 * 4
    assert trained.flops(lambda: torch.addmm(out, a, b)) == 2 * 6 * 5 * 4


def test_the_flip_curve_bins_every_validation_cell_rendered_by_margin(tmp_path):
    curve = margins.flip_curve(str(_tiny_run(tmp_path, "nnunet_2d")))
    assert sum(row["cells"] for row in curve["bins"]) == curve["cells"] > 0
    assert sum(row["flips"] for row in curve["bins"]) == curve["flips"]
    assert [row["rendered_share"] for row in curve["beyond"]] == sorted(
        row["rendered_share"] for row in curve["beyond"])


@pytest.mark.slow
def test_overhead_rows_of_trained_2d_and_3d_runs_per_budget_without_timing(
        tmp_path, monkeypatch, capsys):
    runs = [_tiny_run(tmp_path, "nnunet_2d"),
            _tiny_run(tmp_path, "unet3d", "data.patch_size=[16,16,16]")]
    assert trained.network_batch(load_run(runs[1])).shape == (1, 1, 16, 16, 16)
    capsys.readouterr()  # the training's lines

    def untimed(steps, device, repeats, warmup):  # the rows' plumbing, not their seconds
        return {name: [1.0] * repeats for name in steps}

    monkeypatch.setattr(trained, "_interleaved", untimed)
    monkeypatch.setattr(volume, "_interleaved", untimed)
    argv = ["overhead", "--trained-only", "--repeats", "2", "--run", *map(str, runs)]
    assert bench_main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"trained", "volume"}
    budgets = ["plain", "calibrated", "default", "fixed"]
    for rows, extra in ((result["trained"], ["fp32"]), (result["volume"], [])):
        assert [row["run"] for row in rows] == [str(run) for run in runs]
        for row in rows:
            assert row["variants"] == budgets + extra and row["calibrated_margin"] > 0
            assert all(row[f"points_{name}"] >= 0 and row[f"flops_ratio_{name}"] >= 1
                       for name in row["variants"][1:])
    two_d, three_d = result["volume"]
    assert (two_d["per"], two_d["images"]) == ("slice", 6) and three_d["per"] == "volume"
    assert bench_main(argv) == 0
    text = capsys.readouterr().out
    assert text.count("trained run ") == 2 and text.count("whole-volume prediction") == 2
    assert text.count("  calibrated ") == 4 and "points per slice" in text


@pytest.mark.slow
def test_the_gpu_check_runs_its_code_path_dry_on_a_cpu_and_writes_json_and_markdown(
        tmp_path, capsys):
    assert bench_main(["gpu", "--dry", "-o", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry"] and [(r["setting"][:2], r["precision"]) for r in result["rows"]] == [
        ("2D", "fp32"), ("2D", "bf16"), ("3D", "fp32"), ("3D", "bf16")]
    for row in result["rows"]:
        for mode in ("train", "infer"):
            assert row[f"{mode}_it_s_plain"] > 0 and row[f"{mode}_it_s_morse"] > 0
            key = f"{mode}_time_ratio"
            assert row[f"{key}_min"] <= row[key] <= row[f"{key}_max"]
            assert row[f"{mode}_peak_mib_morse"] is None  # a CPU: no allocator peak
        assert row["points_per_image"] > 0
    assert result["chunked"]["chunked"]["host_peak_mib"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("| 2D UNet") == 2 and table.count("| 3D UNet") == 2
    assert "Chunked prediction of a 32 x 32 x 48 volume (32 x 32 x 32 windows" in table
    # an earlier check is never replaced without --overwrite
    with pytest.raises(SystemExit):
        bench_main(["gpu", "--dry", "-o", str(tmp_path)])
    assert "gpu_check.json: already exists; pass --overwrite" in capsys.readouterr().err
