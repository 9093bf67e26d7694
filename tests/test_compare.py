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
from morse.experiments.results import build_comparison
from morse.experiments.tables import format_markdown
from morse.io.checkpoint import load_checkpoint

from helpers import add_test_set, write_config


def _doc(output: str, per_class: dict[str, float], cases: int = 1, **extra_outputs) -> dict:
    """A metrics.json reduced to what the table reads: Dice (and HD95 with its empty-mask
    policy, 0 unless given as ``(hd95, policy)`` pairs in ``extra_outputs["hd95"]``) per case,
    class and output; every case alike."""
    hd95 = extra_outputs.get("hd95", {})

    def block(values: dict[str, float]) -> dict:
        per_case = {f"c{k}": {name: {"dice": value, "hd95": hd95.get(name, (0.0, ""))[0],
                                     "policy": hd95.get(name, (0.0, ""))[1]}
                              for name, value in values.items()} for k in range(cases)}
        mean = {name: {"dice": value, "hd95": hd95.get(name, (0.0, ""))[0]}
                for name, value in values.items()}
        mean["foreground"] = {key: sum(m[key] for m in mean.values()) / len(values)
                              for key in ("dice", "hd95")}
        return {"mean": mean, "per_case": per_case, "n_cases": cases}

    doc = {output: block(per_class), "coarse": block(extra_outputs.get("coarse", per_class)),
           "class_names": list(per_class), "distance_unit": "mm",
           "settings": {"nsd_tolerances": [], "biou_width": 2.0}}
    return doc


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
        (["--subset", "tset"], "--subset tset: unknown subset; choose from val, test, heldout"),
        (["--subset", "val", "val"], "name each subset once"),
        (["--subset", "heldout", "--images", "scans"], "--images and --labels go together"),
        (["--images", "scans", "--labels", "truth"], "add --subset heldout"),
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


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_every_subset_is_checked_before_any_training(tmp_path, dataset, capsys, monkeypatch):
    monkeypatch.setattr(compare_module, "train", lambda *a, **k: pytest.fail("trained"))
    out = str(tmp_path / "out")
    config = str(write_config(tmp_path / "tiny.yaml", dataset))
    line = _one_line_error(capsys, ["compare", config, "data.split_fractions=[0.8,0.2,0.0]",
                                    "--quick", "-o", out, "--subset", "val", "test"])
    assert f"{dataset}: the split's test subset holds no case (4 train, 1 val, 0 test)" in line
    line = _one_line_error(capsys, ["compare", config, "--quick", "-o", out, "--subset",
                                    "heldout"])
    assert f"{dataset / 'imagesTs'}: no such folder" in line and "--images DIR" in line
    (dataset / "imagesTs").mkdir()
    line = _one_line_error(capsys, ["compare", config, "--quick", "-o", out, "--subset",
                                    "heldout"])
    assert f"{dataset / 'labelsTs'}: no such folder: the held-out scans" in line
    line = _one_line_error(capsys, ["compare", config, "--quick", "-o", out, "--subset",
                                    "heldout", "--images", str(dataset / "imagesTr"),
                                    "--labels", str(tmp_path / "none")])
    assert str(tmp_path / "none") in line
    line = _one_line_error(capsys, ["compare", "demo", "--quick", "-o", out, "--subset",
                                    "heldout"])
    assert "data.format atlas-demo: only nnunet and msd datasets have a held-out set" in line
    assert not (tmp_path / "out").exists()


def test_paired_differences_pair_each_seed_and_case_with_plain_and_resample_seeds():
    docs = {
        "plain": {0: _doc("coarse", {"a": 0.5, "b": 0.6}), 1: _doc("coarse", {"a": 0.1, "b": 0.2})},
        "morse": {0: _doc("rendered", {"a": 0.7, "b": 0.6}),
                  1: _doc("rendered", {"a": 0.2, "b": 0.2})},
    }
    result = build_comparison(docs, "morse compare x", "val")
    dice = result["paired"]["morse"]["dice"]
    assert [(p["seed"], p["class"], round(p["difference"], 6)) for p in dice["pairs"]] == [
        (0, "a", 0.2), (0, "b", 0.0), (1, "a", 0.1), (1, "b", 0.0)]
    assert dice["per_seed"] == pytest.approx({"0": 0.1, "1": 0.05})
    assert dice["mean"] == pytest.approx(0.075)
    # two seeds, one case: the interval spans the two per-seed differences, not the 4 pairs
    assert dice["ci95"] == pytest.approx([0.05, 0.1])
    assert (dice["n_seeds"], dice["n_cases"]) == (2, 1)
    assert "not informative: 2 seeds" in dice["warning"]
    assert result["summary"]["plain"]["coarse"]["dice"]["mean"] == pytest.approx(0.35)
    assert result["summary"]["plain"]["coarse"]["dice"]["std"] == pytest.approx(0.28284, 1e-4)
    text = format_markdown(result)
    assert "    morse compare x" in text and "**val**" in text and "0.3500 ± 0.2828" in text
    assert "| morse (rendered) | 2 × 1 † | +0.0750 [+0.0500, +0.1000]" in text
    assert "† n = 2 × 1: not informative: 2 seeds (at most 3 distinct resamples)" in text


def test_rendering_is_paired_with_the_same_runs_coarse_output():
    morse = {seed: _doc("rendered", {"a": 0.6 + seed / 10, "b": 0.5},
                        coarse={"a": 0.5 + seed / 10, "b": 0.5}) for seed in (0, 1)}
    result = build_comparison({"plain": {0: _doc("coarse", {"a": 0.0, "b": 0.0})},
                               "morse": morse}, "morse compare x", "test")
    assert list(result["rendering"]) == ["morse"]  # plain has no rendered output
    pairs = result["rendering"]["morse"]["dice"]["pairs"]
    assert [(p["seed"], p["class"], round(p["difference"], 6)) for p in pairs] == [
        (0, "a", 0.1), (0, "b", 0.0), (1, "a", 0.1), (1, "b", 0.0)]
    text = format_markdown(result)
    assert "## Rendering against the same runs' coarse output" in text
    assert "| morse (same runs) | 2 × 1 † | +0.0500 [" in text


def test_the_backbone_row_pairs_a_renderer_variants_coarse_output_with_plains():
    plain = {s: _doc("coarse", {"a": 0.5, "b": 0.5}) for s in (0, 1)}
    morse = {s: _doc("rendered", {"a": 0.9, "b": 0.9}, coarse={"a": 0.6, "b": 0.7})
             for s in (0, 1)}
    result = build_comparison({"plain": plain, "morse": morse}, "morse compare x", "test")
    assert result["backbone"]["morse"]["dice"]["mean"] == pytest.approx(0.15)
    assert result["paired"]["morse"]["dice"]["mean"] == pytest.approx(0.4)
    text = format_markdown(result)
    assert "## The backbone trained with the renderer: coarse output − plain" in text
    assert "| morse (coarse) | 2 × 1 † | +0.1500 [+0.1500, +0.1500]" in text


def test_cases_are_resampled_and_n_counts_them():
    """Two cases that disagree (+0.2 and 0.0 under every seed): the interval reaches both."""
    def doc(output, values):
        d = _doc(output, {"a": 0.0}, cases=2)
        for case, value in zip(("c0", "c1"), values):
            d[output]["per_case"][case]["a"]["dice"] = value
        return d

    docs = {"plain": {s: doc("coarse", (0.5, 0.5)) for s in range(5)},
            "morse": {s: doc("rendered", (0.7, 0.5)) for s in range(5)}}
    dice = build_comparison(docs, "x", "test")["paired"]["morse"]["dice"]
    assert (dice["n_seeds"], dice["n_cases"]) == (5, 2)
    assert dice["mean"] == pytest.approx(0.1)
    assert dice["ci95"] == pytest.approx([0.0, 0.2])
    assert "1 case" not in dice["warning"] and "2 cases" in dice["warning"]


def test_empty_masks_and_training_time_stand_beside_the_means():
    hd95 = {"a": (100.0, "one_empty"), "b": (0.0, "both_empty")}
    plain = {s: _doc("coarse", {"a": 0.0, "b": 1.0, "c": 0.5}, hd95=hd95) for s in (0, 1)}
    result = build_comparison({"plain": plain}, "x", "val",
                              train_seconds={"plain": {0: 100.0, 1: 120.0}})
    assert result["empty_masks"]["plain"]["coarse"] == {
        "one_empty": 2, "both_empty": 2, "pairs": 6, "share": {"hd95": 1.0}}
    assert result["train_seconds"]["plain"]["mean"] == pytest.approx(110.0)
    text = format_markdown(result)
    assert ("| variant | output | seeds | Dice | HD95 (mm) | empty masks (one / both) | "
            "train (s) |") in text
    assert "| 2 / 2 of 6, 100% of HD95 | 110 ± 14 |" in text
    missing = build_comparison({"plain": plain}, "x", "val")
    assert "| not recorded |" in format_markdown(missing)


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
    add_test_set(dataset, ("case4",))
    out = tmp_path / "out"
    command = ["compare", str(config), "--quick", "-o", str(out), "--subset", "val", "heldout"]
    assert main(command) == 0
    heldout = json.loads((out / "comparison_heldout.json").read_text())
    assert heldout["heldout"]["images"] == str(dataset / "imagesTs") and heldout["n_cases"] == 1
    assert (out / "morse" / "seed0" / "eval_heldout" / "metrics.json").is_file()
    assert heldout["backbone"]["morse"]["dice"]["n_seeds"] == 1
    assert "**heldout**" in (out / "comparison_heldout.md").read_text()
    result = json.loads((out / "comparison_val.json").read_text())
    assert result["train_seconds"]["morse"]["mean"] > 0
    assert list(result["summary"]) == ["plain", "morse"]
    assert list(result["summary"]["plain"]) == ["coarse"]
    assert list(result["summary"]["morse"]) == ["rendered", "coarse"]
    assert result["metrics"] == ["dice", "hd95", "asd", "nsd_1mm", "nsd_2mm", "biou"]
    plain, morse = (json.loads((out / v / "seed0" / "eval_val" / "metrics.json").read_text())
                    for v in ("plain", "morse"))
    paired = result["paired"]["morse"]["dice"]
    assert (paired["n_seeds"], paired["n_cases"]) == (1, 1) and paired["mean"] == pytest.approx(
        morse["rendered"]["mean"]["disc"]["dice"] - plain["coarse"]["mean"]["disc"]["dice"])
    text = (out / "comparison_val.md").read_text()
    assert (f"morse compare {config} --variants plain morse --seeds 0 -o {out} --subset val "
            "heldout --quick") in text
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
    timed = json.loads((out / "morse" / "seed0" / "train_time.json").read_text())
    assert timed["sittings"] == 2, "the interrupted sitting's time is kept and the resumed added"
    steps = [int(r.split(",")[0]) for r in
             (out / "morse" / "seed0" / "curves.csv").read_text().splitlines()[1:]]
    assert steps[:4] == [1, 2, 3, 4]
