"""``morse compare``: variants x seeds through train/evaluate, one table, resumable."""

from __future__ import annotations

import json
import shutil

import pytest

import morse.experiments.compare as compare_module
import morse.training.loop as loop_module
from morse.cli.main import main
from morse.config import load_config, save_config
from morse.experiments.compare import QUICK, make_plan, variant_overrides
from morse.experiments.results import build_comparison, format_markdown
from morse.io.checkpoint import load_checkpoint

from helpers import write_config


def _doc(output: str, per_class: dict[str, float]) -> dict:
    """A metrics.json reduced to what the table reads: per-class and foreground Dice."""
    mean = {name: {"dice": value} for name, value in per_class.items()}
    mean["foreground"] = {"dice": sum(per_class.values()) / len(per_class)}
    block = {"mean": mean, "n_cases": 2}
    return {output: block, "coarse": block, "class_names": list(per_class),
            "distance_unit": "mm", "settings": {"nsd_tolerances": [], "biou_width": 2.0}}


def test_every_variant_sets_all_switches_and_seeds_only_change_train_seed(tmp_path):
    plan = make_plan("demo", ["data.seed=7"], output=tmp_path, seeds=[3, 4])
    by_label = {spec.label: spec for spec in plan.runs}
    assert list(by_label)[:2] == ["plain/seed3", "pointrend/seed3"]  # whole seeds first
    switches = {spec.variant: (spec.config.model.renderer, spec.config.model.experts,
                               spec.config.model.stochastic_gating, spec.config.model.fourier)
                for spec in plan.runs}
    assert switches == {
        "plain": (False, True, True, True), "pointrend": (True, False, True, False),
        "no-gating": (True, True, False, True), "no-fourier": (True, True, True, False),
        "morse": (True, True, True, True),
    }
    assert {spec.config.train.seed for spec in plan.runs} == {3, 4}
    assert {spec.config.data.seed for spec in plan.runs} == {7}
    assert by_label["morse/seed4"].run_dir == tmp_path / "morse" / "seed4"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--variants", "plain", "pointrnd"], "known: plain, pointrend, no-gating"),
        (["--variants", "plain", "train.lr=1"], "right after CONFIG"),
        (["--seeds", "0", "train.lr=1"], "right after CONFIG"),
        (["train.seed=5"], "train.seed is set by --seeds"),
        (["model.experts=false"], "model.experts is set by --variants"),
        (["--seeds", "1", "1"], "name each variant and seed once"),
    ],
)
def test_bad_variants_seeds_or_overrides_are_refused_before_training(
    tmp_path, capsys, args, message
):
    try:
        code = main(["compare", "demo", *args, "-o", str(tmp_path / "out")])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_paired_differences_pair_each_seed_and_class_with_plain_of_the_same_seed():
    docs = {
        "plain": {0: _doc("coarse", {"a": 0.5, "b": 0.6}), 1: _doc("coarse", {"a": 0.1, "b": 0.2})},
        "morse": {0: _doc("rendered", {"a": 0.7, "b": 0.6}),
                  1: _doc("rendered", {"a": 0.2, "b": 0.2})},
    }
    result = build_comparison(docs, "morse compare x", "val")
    pairs = result["paired"]["morse"]["dice"]["pairs"]
    assert [(p["seed"], p["class"], round(p["difference"], 6)) for p in pairs] == [
        (0, "a", 0.2), (0, "b", 0.0), (1, "a", 0.1), (1, "b", 0.0)]
    assert result["paired"]["morse"]["dice"]["mean"] == pytest.approx(0.075)
    low, high = result["paired"]["morse"]["dice"]["ci95"]
    assert 0.0 <= low < 0.075 < high <= 0.2
    assert result["summary"]["plain"]["coarse"]["dice"]["mean"] == pytest.approx(0.35)
    assert result["summary"]["plain"]["coarse"]["dice"]["std"] == pytest.approx(0.28284, 1e-4)
    text = format_markdown(result)
    assert "    morse compare x" in text and "**val**" in text and "0.3500 ± 0.2828" in text
    assert "+0.0750 [" in text


def test_rendering_is_paired_with_the_same_runs_coarse_output():
    morse = {seed: _doc("rendered", {"a": 0.6 + seed / 10, "b": 0.5}) for seed in (0, 1)}
    for seed, doc in morse.items():
        doc["coarse"] = _doc("coarse", {"a": 0.5 + seed / 10, "b": 0.5})["coarse"]
    result = build_comparison({"plain": {0: _doc("coarse", {"a": 0.0, "b": 0.0})},
                               "morse": morse}, "morse compare x", "test")
    assert list(result["rendering"]) == ["morse"]  # plain has no rendered output
    pairs = result["rendering"]["morse"]["dice"]["pairs"]
    assert [(p["seed"], p["class"], round(p["difference"], 6)) for p in pairs] == [
        (0, "a", 0.1), (0, "b", 0.0), (1, "a", 0.1), (1, "b", 0.0)]
    text = format_markdown(result)
    assert "## Rendering against the same runs' coarse output" in text
    assert "| morse (same runs) | 4 | +0.0500 [" in text


def test_a_run_trained_with_other_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    run = out / "plain" / "seed0"
    run.mkdir(parents=True)
    other = load_config("demo", [*QUICK, *variant_overrides("plain"), "train.seed=0",
                                 "train.lr=0.5"])
    save_config(other, run / "config.yaml")
    assert main(["compare", "demo", "--quick", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(run / "config.yaml") in err and "train.lr: 0.5 -> 0.002" in err


def _interrupt_at(step: int):
    """A build_loss whose loss raises KeyboardInterrupt (Ctrl-C) at ``step``."""
    real = loop_module.build_loss

    def build(cfg, num_classes):
        loss_fn = real(cfg, num_classes)

        def loss(output, label, current, total):
            if current == step:
                raise KeyboardInterrupt
            return loss_fn(output, label, current, total)

        return loss

    return build


@pytest.mark.slow
def test_quick_comparison_end_to_end_skips_finished_runs_and_resumes_an_interrupted_one(
    tmp_path, dataset, capsys, monkeypatch
):
    config = write_config(tmp_path / "tiny.yaml", dataset)
    out = tmp_path / "out"
    command = ["compare", str(config), "--quick", "-o", str(out)]
    assert main(command) == 0
    result = json.loads((out / "comparison_val.json").read_text())
    assert list(result["summary"]) == ["plain", "morse"]
    assert list(result["summary"]["plain"]) == ["coarse"]
    assert list(result["summary"]["morse"]) == ["rendered", "coarse"]
    assert result["metrics"] == ["dice", "hd95", "asd", "nsd_1mm", "nsd_2mm", "biou"]
    plain, morse = (json.loads((out / v / "seed0" / "eval_val" / "metrics.json").read_text())
                    for v in ("plain", "morse"))
    paired = result["paired"]["morse"]["dice"]
    assert paired["n_pairs"] == 1 and paired["mean"] == pytest.approx(
        morse["rendered"]["mean"]["disc"]["dice"] - plain["coarse"]["mean"]["disc"]["dice"])
    text = (out / "comparison_val.md").read_text()
    assert f"morse compare {config} --variants plain morse --seeds 0 -o {out} --subset val" in text
    assert "**val**" in text and "HD95 (mm)" in text and "NSD@2 mm" in text
    assert "Checkpoints scored: best.pt" in text
    assert (out / "paired_differences_val.png").read_bytes()[:4] == b"\x89PNG"

    calls = []
    real_train = compare_module.train

    def spy(cfg, run_dir, **options):
        calls.append((run_dir.parent.name, options.get("resume", False)))
        return real_train(cfg, run_dir, **options)

    monkeypatch.setattr(compare_module, "train", spy)
    scored = (out / "plain" / "seed0" / "eval_val" / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(command) == 0
    assert calls == [] and capsys.readouterr().out.count("skipped") == 2

    # Ctrl-C in the morse run's third step: the loop saves last.pt at step 2 and stops.
    shutil.rmtree(out / "morse" / "seed0")
    with monkeypatch.context() as patch:
        patch.setattr(loop_module, "build_loss", _interrupt_at(2))
        assert main(command) == 130
    assert load_checkpoint(out / "morse" / "seed0" / "last.pt")["step"] == 2
    calls.clear()
    capsys.readouterr()
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert calls == [("morse", True)], "the interrupted run must resume, the finished one skip"
    assert "morse/seed0: resuming from step 2 of 4" in printed
    assert (out / "plain" / "seed0" / "eval_val" / "metrics.json").stat().st_mtime_ns == scored
    assert load_checkpoint(out / "morse" / "seed0" / "last.pt")["step"] == 4
    steps = [int(r.split(",")[0]) for r in
             (out / "morse" / "seed0" / "curves.csv").read_text().splitlines()[1:]]
    assert steps[:4] == [1, 2, 3, 4]
