"""The comparison table: runs' ``metrics.json`` files -> means over seeds and paired differences.

``docs`` below is ``{variant: {seed: metrics.json content}}`` (layout in
:func:`morse.evaluation.tables.write_metrics`). A variant's *output* is its rendered one when
its renderer is on (the coarse one is reported beside it), else its coarse (= only) output.

Differences are paired by seed and case: for the same seed and case, the variant's output
minus the other side's, the classes averaged inside the case. The S seeds x C cases table of
such differences is what :func:`morse.experiments.stats.cluster_bootstrap` resamples; the
per (seed, class) differences are kept too, for the plot's dots.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from morse.errors import ConfigError
from morse.evaluation.tables import FOREGROUND
from morse.experiments.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    MIN_UNITS,
    cluster_bootstrap,
    mean_std,
)
from morse.metrics import DISTANCE_METRICS, MetricSettings

__all__ = [
    "PLAIN",
    "build_comparison",
    "case_means",
    "empty_masks",
    "paired_differences",
    "read_metrics",
    "table_metrics",
]

#: The variant every other is compared with.
PLAIN = "plain"



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
    """Every run scored with the same classes, unit, metric settings and cases."""
    label, first = _first(docs)
    keys = ("class_names", "distance_unit", "settings")
    cases = sorted(first["coarse"].get("per_case", {}))
    for variant, by_seed in docs.items():
        for seed, doc in by_seed.items():
            differ = [k for k in keys if doc.get(k) != first.get(k)]
            if sorted(doc["coarse"].get("per_case", {})) != cases:
                differ.append("cases")
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


def _per_case(doc: Mapping, output: str) -> dict:
    block = doc[output]
    if "per_case" not in block:
        raise ConfigError(f"a metrics.json without per-case values ({output} output); delete "
                          "the runs' eval_<subset> folders and run the comparison again to "
                          "score them anew")
    return block["per_case"]


def case_means(doc: Mapping, output: str, metric: str) -> dict[str, float]:
    """``{case: metric averaged over the foreground classes of that case}``.

    >>> doc = {"coarse": {"per_case": {"c1": {"a": {"dice": 0.5}, "b": {"dice": 1.0}},
    ...                                "c2": {"a": {"dice": 0.0}, "b": {"dice": 0.5}}}}}
    >>> case_means(doc, "coarse", "dice")
    {'c1': 0.75, 'c2': 0.25}
    """
    return {case: float(np.mean([values[metric] for values in classes.values()]))
            for case, classes in _per_case(doc, output).items()}


def empty_masks(by_seed: Mapping[int, dict], output: str) -> dict:
    """How many (case, class) pairs, over all seeds, had an empty mask, and how much of the
    distance means they make up.

    Returns:
        ``{"one_empty": n, "both_empty": n, "pairs": N, "share": {metric: fraction}}``:
        ``one_empty`` pairs (a class missed or hallucinated) score the fallback distance,
        ``both_empty`` pairs 0 (see :mod:`morse.metrics`); ``share`` is the fraction of the
        sum of each distance over all pairs that the one-empty pairs contribute, i.e. of the
        foreground mean.

    >>> pc = {"c1": {"a": {"hd95": 90.0, "policy": "one_empty"}, "b": {"hd95": 10.0, "policy": ""}},
    ...       "c2": {"a": {"hd95": 0.0, "policy": "both_empty"}, "b": {"hd95": 0.0, "policy": ""}}}
    >>> empty_masks({0: {"coarse": {"per_case": pc}}}, "coarse")
    {'one_empty': 1, 'both_empty': 1, 'pairs': 4, 'share': {'hd95': 0.9}}
    """
    counts = {"one_empty": 0, "both_empty": 0, "pairs": 0}
    total: dict[str, float] = {}
    fallback: dict[str, float] = {}
    for doc in by_seed.values():
        for classes in _per_case(doc, output).values():
            for values in classes.values():
                counts["pairs"] += 1
                policy = values.get("policy", "")
                if policy in counts:
                    counts[policy] += 1
                for metric in DISTANCE_METRICS:
                    if metric in values:
                        total[metric] = total.get(metric, 0.0) + values[metric]
                        if policy == "one_empty":
                            fallback[metric] = fallback.get(metric, 0.0) + values[metric]
    share = {m: (fallback.get(m, 0.0) / total[m] if total[m] else 0.0) for m in total}
    return {**counts, "share": share}


def paired_differences(
    base: Mapping[int, dict], other: Mapping[int, dict], metric: str,
    outputs: tuple[str, str] | None = None,
) -> list[dict]:
    """One ``{"seed", "class", "difference"}`` per seed of both and foreground class: the
    other side's output minus the base's, per-class means over cases (the plot's dots).

    ``outputs`` names the two outputs compared, e.g. ``("coarse", "rendered")`` for what
    rendering changes in the same runs; default: each side's first output.

    >>> doc = lambda o, a, b: {o: {"mean": {"a": {"dice": a}, "b": {"dice": b}}}}
    >>> paired_differences({0: doc("coarse", 0.5, 0.7)}, {0: doc("rendered", 0.75, 0.7)}, "dice")
    [{'seed': 0, 'class': 'a', 'difference': 0.25}, {'seed': 0, 'class': 'b', 'difference': 0.0}]
    """
    pairs = []
    for seed in sorted(set(base) & set(other)):
        base_output, other_output = outputs or _outputs(base[seed], other[seed])
        before, after = base[seed][base_output]["mean"], other[seed][other_output]["mean"]
        for name in before:
            if name != FOREGROUND and name in after:
                difference = after[name][metric] - before[name][metric]
                pairs.append({"seed": seed, "class": name, "difference": difference})
    return pairs


def _outputs(base: Mapping, other: Mapping) -> tuple[str, str]:
    return outputs_of(base)[0], outputs_of(other)[0]


def difference_table(
    base: Mapping[int, dict], other: Mapping[int, dict], metric: str,
    outputs: tuple[str, str] | None = None,
) -> tuple[list[int], list[str], np.ndarray]:
    """The seeds of both sides, the cases, and the (S, C) table of differences (other minus
    base, per seed and case, classes averaged inside each case).

    >>> doc = lambda o, x, y: {o: {"per_case": {"c1": {"a": {"dice": x}},
    ...                                         "c2": {"a": {"dice": y}}}}}
    >>> difference_table({0: doc("coarse", 0.5, 0.5)}, {0: doc("rendered", 0.75, 0.5)}, "dice")
    ([0], ['c1', 'c2'], array([[0.25, 0.  ]]))
    """
    seeds = sorted(set(base) & set(other))
    rows, cases = [], None
    for seed in seeds:
        base_output, other_output = outputs or _outputs(base[seed], other[seed])
        before = case_means(base[seed], base_output, metric)
        after = case_means(other[seed], other_output, metric)
        cases = cases or sorted(before)
        rows.append([after[case] - before[case] for case in cases])
    return seeds, cases or [], np.asarray(rows, dtype=float)


def _paired(base: Mapping[int, dict], other: Mapping[int, dict], metrics: list[str],
            outputs: tuple[str, str] | None = None) -> dict:
    out = {}
    for metric in metrics:
        seeds, cases, table = difference_table(base, other, metric, outputs)
        interval = cluster_bootstrap(table)
        out[metric] = {
            **interval.to_dict(),
            "per_seed": {str(s): float(row.mean()) for s, row in zip(seeds, table)},
            "pairs": paired_differences(base, other, metric, outputs),
        }
    return out


def _train_time(seconds: Mapping[int, float | None] | None) -> dict | None:
    """Mean ± std over seeds of the recorded training seconds (None: none recorded)."""
    recorded = {str(s): v for s, v in (seconds or {}).items() if v is not None}
    if not recorded:
        return None
    mean, std = mean_std(list(recorded.values()))
    return {"mean": mean, "std": std, "per_seed": recorded}


def build_comparison(
    docs: Mapping[str, Mapping[int, dict]], command: str, subset: str,
    train_seconds: Mapping[str, Mapping[int, float | None]] | None = None,
) -> dict:
    """Everything ``comparison.json`` holds: the command, the subset, per-variant summaries
    of each output with their empty-mask counts and training time, and when ``plain`` is
    among the variants the paired differences to it (``paired``) and, for renderer variants,
    their coarse output against plain's (``backbone``: did training with the renderer change
    the backbone itself?); for every renderer variant its rendered output against its own
    coarse output (``rendering``: what rendering changes, the backbone held fixed)."""
    _check_alike(docs)
    _, first = _first(docs)
    metrics = table_metrics(first)
    renderers = [v for v, by_seed in docs.items()
                 if "rendered" in outputs_of(next(iter(by_seed.values())))]
    comparison = {
        "command": command, "subset": subset, "metrics": metrics,
        "distance_unit": first["distance_unit"], "class_names": first["class_names"],
        "n_cases": first["coarse"]["n_cases"],
        "heldout": {k: first[k] for k in ("images", "labels") if k in first} or None,
        "seeds": {v: sorted(by_seed) for v, by_seed in docs.items()},
        "checkpoints": {v: {str(s): d.get("checkpoint") for s, d in by_seed.items()}
                        for v, by_seed in docs.items()},
        "summary": {v: {output: summarise_variant(by_seed, output, metrics)
                        for output in outputs_of(next(iter(by_seed.values())))}
                    for v, by_seed in docs.items()},
        "empty_masks": {v: {output: empty_masks(by_seed, output)
                            for output in outputs_of(next(iter(by_seed.values())))}
                        for v, by_seed in docs.items()},
        "train_seconds": {v: _train_time((train_seconds or {}).get(v)) for v in docs},
        "paired": {}, "backbone": {},
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95,
                      "unit": "seeds and cases (two-way cluster bootstrap, paired)",
                      "min_units": MIN_UNITS},
    }
    if PLAIN in docs:
        comparison["paired"] = {v: _paired(docs[PLAIN], by_seed, metrics)
                                for v, by_seed in docs.items() if v != PLAIN}
        comparison["backbone"] = {v: _paired(docs[PLAIN], docs[v], metrics,
                                             ("coarse", "coarse")) for v in renderers}
    comparison["rendering"] = {v: _paired(docs[v], docs[v], metrics, ("coarse", "rendered"))
                               for v in renderers}
    return comparison
