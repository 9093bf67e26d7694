"""The comparison table: runs' ``metrics.json`` files -> means over seeds and paired differences.

``docs`` below is ``{variant: {seed: metrics.json content}}`` (layout in
:func:`morse.evaluation.tables.write_metrics`). A variant's *output* is its rendered one when
its renderer is on (the coarse one is reported beside it), else its coarse (= only) output.
Differences to the plain backbone are paired by (seed, foreground class): the variant's
per-class mean minus plain's, for the same seed and class.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from morse.errors import ConfigError
from morse.evaluation.tables import FOREGROUND, metric_header
from morse.experiments.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    mean_std,
    paired_bootstrap_ci,
)
from morse.metrics import DISTANCE_METRICS, MetricSettings

__all__ = ["PLAIN", "build_comparison", "format_markdown", "read_metrics", "table_metrics"]

#: The variant every other is compared with.
PLAIN = "plain"

_SUBSET_NOTE = {
    "val": "the split's **validation** cases, where settings are chosen",
    "test": "the split's **test** cases: report these only for settings already fixed on val",
}


def read_metrics(path: Path) -> dict:
    """A run's ``metrics.json``; an unreadable one is named with the fix."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: unreadable ({error}); delete it and run the same command "
                          "again to score that run anew") from error


def outputs_of(doc: Mapping) -> list[str]:
    """The outputs of a run, the one compared first: ``["rendered", "coarse"]`` or
    ``["coarse"]`` (renderer off)."""
    return ["rendered", "coarse"] if "rendered" in doc else ["coarse"]


def table_metrics(doc: Mapping) -> list[str]:
    """The metrics of the table: Dice, HD95, ASD, each NSD and bIoU, those the run scored.

    >>> doc = {"settings": {"nsd_tolerances": [1.0, 2.0], "biou_width": 2.0},
    ...        "coarse": {"mean": {"foreground": dict.fromkeys(
    ...            ["dice", "iou", "hd95", "asd", "nsd_1mm", "nsd_2mm", "biou"], 0.5)}}}
    >>> table_metrics(doc)
    ['dice', 'hd95', 'asd', 'nsd_1mm', 'nsd_2mm', 'biou']
    """
    settings = doc["settings"]
    names = MetricSettings(tuple(settings["nsd_tolerances"]), settings["biou_width"]).names
    scored = doc["coarse"]["mean"][FOREGROUND]
    return [name for name in names if name != "iou" and name in scored]


def _first(docs: Mapping[str, Mapping[int, dict]]) -> tuple[str, dict]:
    variant = next(iter(docs))
    seed = next(iter(docs[variant]))
    return f"{variant}/seed{seed}", docs[variant][seed]


def _check_alike(docs: Mapping[str, Mapping[int, dict]]) -> None:
    """Every run scored with the same classes, unit and metric settings."""
    label, first = _first(docs)
    keys = ("class_names", "distance_unit", "settings")
    for variant, by_seed in docs.items():
        for seed, doc in by_seed.items():
            differ = [k for k in keys if doc.get(k) != first.get(k)]
            if differ:
                raise ConfigError(
                    f"{variant}/seed{seed} and {label} were scored with different "
                    f"{', '.join(differ)}; score every run on the same data and eval settings"
                )


def summarise_variant(by_seed: Mapping[int, dict], output: str, metrics: list[str]) -> dict:
    """``{metric: {"mean", "std", "per_seed": {seed: value}}}`` of the foreground means.

    >>> doc = lambda d: {"coarse": {"mean": {"foreground": {"dice": d}}}}
    >>> s = summarise_variant({0: doc(0.6), 1: doc(0.8)}, "coarse", ["dice"])["dice"]
    >>> round(s["mean"], 6), round(s["std"], 6), s["per_seed"]
    (0.7, 0.141421, {'0': 0.6, '1': 0.8})
    """
    out = {}
    for metric in metrics:
        values = {str(seed): doc[output]["mean"][FOREGROUND][metric]
                  for seed, doc in by_seed.items()}
        mean, std = mean_std(list(values.values()))
        out[metric] = {"mean": mean, "std": std, "per_seed": values}
    return out


def paired_differences(
    plain: Mapping[int, dict], variant: Mapping[int, dict], metric: str,
    outputs: tuple[str, str] | None = None,
) -> list[dict]:
    """One ``{"seed", "class", "difference"}`` per seed of both and foreground class: the
    variant's output minus plain's, per-class means over cases.

    ``outputs`` names the two outputs compared, e.g. ``("coarse", "rendered")`` for what
    rendering changes in the same runs; default: each side's first output.

    >>> doc = lambda o, a, b: {o: {"mean": {"a": {"dice": a}, "b": {"dice": b}}}}
    >>> paired_differences({0: doc("coarse", 0.5, 0.7)}, {0: doc("rendered", 0.75, 0.7)}, "dice")
    [{'seed': 0, 'class': 'a', 'difference': 0.25}, {'seed': 0, 'class': 'b', 'difference': 0.0}]
    """
    pairs = []
    for seed in sorted(set(plain) & set(variant)):
        base_output, other_output = outputs or (outputs_of(plain[seed])[0],
                                                outputs_of(variant[seed])[0])
        base = plain[seed][base_output]["mean"]
        other = variant[seed][other_output]["mean"]
        for name in base:
            if name != FOREGROUND and name in other:
                difference = other[name][metric] - base[name][metric]
                pairs.append({"seed": seed, "class": name, "difference": difference})
    return pairs


def _paired(plain: Mapping[int, dict], variant: Mapping[int, dict], metrics: list[str],
            outputs: tuple[str, str] | None = None) -> dict:
    out = {}
    for metric in metrics:
        pairs = paired_differences(plain, variant, metric, outputs)
        mean, low, high = paired_bootstrap_ci([p["difference"] for p in pairs])
        out[metric] = {"mean": mean, "ci95": [low, high], "n_pairs": len(pairs), "pairs": pairs}
    return out


def build_comparison(
    docs: Mapping[str, Mapping[int, dict]], command: str, subset: str
) -> dict:
    """Everything ``comparison.json`` holds: the command, the subset, per-variant summaries
    of each output, when ``plain`` is among the variants paired differences to it, and for
    every variant with a renderer its rendered output paired with its own coarse output
    (what rendering changes in the same runs, the backbone held fixed)."""
    _check_alike(docs)
    _, first = _first(docs)
    metrics = table_metrics(first)
    comparison = {
        "command": command, "subset": subset, "metrics": metrics,
        "distance_unit": first["distance_unit"], "class_names": first["class_names"],
        "n_cases": first["coarse"]["n_cases"],
        "seeds": {v: sorted(by_seed) for v, by_seed in docs.items()},
        "checkpoints": {v: {str(s): d.get("checkpoint") for s, d in by_seed.items()}
                        for v, by_seed in docs.items()},
        "summary": {v: {output: summarise_variant(by_seed, output, metrics)
                        for output in outputs_of(next(iter(by_seed.values())))}
                    for v, by_seed in docs.items()},
        "paired": {},
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95,
                      "unit": "(seed, class) pairs"},
    }
    if PLAIN in docs:
        comparison["paired"] = {v: _paired(docs[PLAIN], by_seed, metrics)
                                for v, by_seed in docs.items() if v != PLAIN}
    comparison["rendering"] = {
        v: _paired(by_seed, by_seed, metrics, ("coarse", "rendered"))
        for v, by_seed in docs.items() if "rendered" in outputs_of(next(iter(by_seed.values())))
    }
    return comparison


def _number(metric: str, value: float, sign: bool = False) -> str:
    digits = 2 if metric in DISTANCE_METRICS else 4
    return f"{value:{'+' if sign else ''}.{digits}f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _summary_table(comparison: dict) -> list[str]:
    metrics, unit = comparison["metrics"], comparison["distance_unit"]
    lines = [_row(["variant", "output", "seeds", *(metric_header(m, unit) for m in metrics)]),
             _row(["---"] * (3 + len(metrics)))]
    for variant, outputs in comparison["summary"].items():
        for output, stats in outputs.items():
            cells = [_number(m, stats[m]["mean"]) + ("" if stats[m]["std"] is None
                                                     else f" ± {_number(m, stats[m]['std'])}")
                     for m in metrics]
            seeds = len(comparison["seeds"][variant])
            lines.append(_row([variant, output, str(seeds), *cells]))
    return lines


def _paired_table(comparison: dict, key: str = "paired") -> list[str]:
    metrics, unit = comparison["metrics"], comparison["distance_unit"]
    first = f"variant − {PLAIN}" if key == "paired" else "variant: rendered − coarse"
    lines = [_row([first, "pairs", *(metric_header(m, unit) for m in metrics)]),
             _row(["---"] * (2 + len(metrics)))]
    for variant, by_metric in comparison[key].items():
        output = next(iter(comparison["summary"][variant])) if key == "paired" else "same runs"
        cells = [f"{_number(m, by_metric[m]['mean'], True)} "
                 f"[{_number(m, by_metric[m]['ci95'][0], True)}, "
                 f"{_number(m, by_metric[m]['ci95'][1], True)}]" for m in metrics]
        lines.append(_row([f"{variant} ({output})", str(by_metric[metrics[0]]["n_pairs"]),
                           *cells]))
    return lines


def _checkpoint_files(comparison: dict) -> str:
    """The checkpoint files the runs were scored with, e.g. ``"best.pt"``."""
    files = {scored["file"] for by_seed in comparison["checkpoints"].values()
             for scored in by_seed.values() if scored}
    return ", ".join(sorted(files)) or "not recorded"


def format_markdown(comparison: dict, figure: str | None = None) -> str:
    """``comparison.md``: the command, the subset, the table and the paired differences."""
    boot = comparison["bootstrap"]
    lines = [
        f"# Comparison on the {comparison['subset']} subset", "", "Produced by:", "",
        f"    {comparison['command']}", "",
        f"Subset: **{comparison['subset']}**, {_SUBSET_NOTE[comparison['subset']]} "
        f"({comparison['n_cases']} case(s), classes {', '.join(comparison['class_names'])}). "
        "Each cell: mean ± standard deviation over seeds of the foreground mean (the mean "
        "over classes of the per-class means over cases). Distances in "
        f"{comparison['distance_unit']}; the renderer's variants list their rendered output "
        "and, beside it, their coarse (backbone) output. Checkpoints scored: "
        f"{_checkpoint_files(comparison)} (each run's file and step in comparison.json).", "",
        *_summary_table(comparison), "",
    ]
    if comparison["paired"]:
        lines += [
            f"## Paired differences to {PLAIN}", "",
            f"The variant's output minus {PLAIN}'s, per (seed, foreground class) pair of "
            "per-class means, same seed and class on both sides: mean [95% percentile "
            f"bootstrap interval, {boot['resamples']:,} resamples of the pairs, seed "
            f"{boot['seed']}]. Higher is better for Dice, NSD and bIoU; lower for HD95 and "
            "ASD.", "", *_paired_table(comparison), "",
        ]
        if figure:
            lines += [f"![paired differences per class]({figure})", ""]
    else:
        lines += [f"No paired differences: {PLAIN} is not among the variants.", ""]
    if comparison.get("rendering"):
        lines += [
            "## Rendering against the same runs' coarse output", "",
            "Each renderer variant's rendered output minus its own coarse (backbone) output, "
            "per (seed, foreground class) pair, bootstrap as above: what rendering changes "
            "with the backbone held fixed.", "", *_paired_table(comparison, "rendering"), "",
        ]
    return "\n".join(lines)
