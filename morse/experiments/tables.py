"""The comparison as Markdown: the summary table, paired differences, the backbone and
rendering rows, each interval with its n (:func:`format_markdown` of what
:func:`morse.experiments.results.build_comparison` returns)."""

from __future__ import annotations

from morse.evaluation.tables import metric_header
from morse.experiments.results import PLAIN
from morse.metrics import DISTANCE_METRICS

__all__ = ["format_markdown"]

_SUBSET_NOTE = {
    "val": "the split's **validation** cases, where settings are chosen",
    "test": "the split's **test** cases: report these only for settings already fixed on val",
    "heldout": "the dataset's **held-out** set (imagesTs + labelsTs, or `--images` + "
               "`--labels`), outside the split: report it only for settings already fixed on "
               "val",
}


def _number(metric: str, value: float, sign: bool = False) -> str:
    digits = 2 if metric in DISTANCE_METRICS else 4
    return f"{value:{'+' if sign else ''}.{digits}f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


#: The summary table's column of empty-mask counts, placed after the last distance metric.
EMPTY = "empty"


def _summary_columns(metrics: list[str]) -> list[str]:
    """The metrics with :data:`EMPTY` after the last distance among them (none: last)."""
    distances = [i for i, m in enumerate(metrics) if m in DISTANCE_METRICS]
    at = distances[-1] + 1 if distances else len(metrics)
    return [*metrics[:at], EMPTY, *metrics[at:]]


def _empty_cell(counts: dict) -> str:
    """``"3 / 0 of 30, 66% of HD95"``: one-empty / both-empty pairs, and the share of the
    HD95 mean the one-empty pairs make up."""
    cell = f"{counts['one_empty']} / {counts['both_empty']} of {counts['pairs']}"
    share = counts["share"].get("hd95")
    return cell + (f", {share:.0%} of HD95" if counts["one_empty"] and share is not None else "")


def _time_cell(train: dict | None) -> str:
    if train is None:
        return "not recorded"
    return f"{train['mean']:.0f}" + ("" if train["std"] is None else f" ± {train['std']:.0f}")


def _summary_table(comparison: dict) -> list[str]:
    metrics, unit = comparison["metrics"], comparison["distance_unit"]
    columns = _summary_columns(metrics)
    titles = ["empty masks (one / both)" if c == EMPTY else metric_header(c, unit)
              for c in columns]
    lines = [_row(["variant", "output", "seeds", *titles, "train (s)"]),
             _row(["---"] * (4 + len(columns)))]
    for variant, outputs in comparison["summary"].items():
        for index, (output, stats) in enumerate(outputs.items()):
            cells = [_empty_cell(comparison["empty_masks"][variant][output]) if c == EMPTY
                     else _number(c, stats[c]["mean"]) + ("" if stats[c]["std"] is None
                                                          else f" ± {_number(c, stats[c]['std'])}")
                     for c in columns]
            seeds = len(comparison["seeds"][variant])
            train = "" if index else _time_cell(comparison["train_seconds"][variant])
            lines.append(_row([variant, output, str(seeds), *cells, train]))
    return lines


_FIRST_COLUMN = {"paired": f"variant − {PLAIN}", "backbone": f"coarse − {PLAIN}",
                 "rendering": "rendered − coarse"}


def _paired_table(comparison: dict, key: str = "paired") -> list[str]:
    """One row per variant of ``comparison[key]``: mean [interval] per metric and n; then
    one line per distinct small-sample warning."""
    metrics, unit = comparison["metrics"], comparison["distance_unit"]
    lines = [_row([_FIRST_COLUMN[key], "n (seeds × cases)",
                   *(metric_header(m, unit) for m in metrics)]),
             _row(["---"] * (2 + len(metrics)))]
    warnings = {}
    for variant, by_metric in comparison[key].items():
        output = {"paired": next(iter(comparison["summary"][variant])), "backbone": "coarse",
                  "rendering": "same runs"}[key]
        cells = [f"{_number(m, by_metric[m]['mean'], True)} "
                 f"[{_number(m, by_metric[m]['ci95'][0], True)}, "
                 f"{_number(m, by_metric[m]['ci95'][1], True)}]" for m in metrics]
        first = by_metric[metrics[0]]
        n = f"{first['n_seeds']} × {first['n_cases']}"
        if first["warning"]:
            warnings[n] = first["warning"]
            n += " †"
        lines.append(_row([f"{variant} ({output})", n, *cells]))
    lines += ["", *(f"† n = {n}: {text}." for n, text in warnings.items())] if warnings else []
    return lines


def _checkpoint_files(comparison: dict) -> str:
    """The checkpoint files the runs were scored with, e.g. ``"best.pt"``."""
    files = {scored["file"] for by_seed in comparison["checkpoints"].values()
             for scored in by_seed.values() if scored}
    return ", ".join(sorted(files)) or "not recorded"


def _subset_line(comparison: dict) -> str:
    heldout = comparison.get("heldout")
    where = (f" (images {heldout['images']}, labels {heldout['labels']})"
             if heldout and comparison["subset"] == "heldout" else "")
    return (f"Subset: **{comparison['subset']}**, {_SUBSET_NOTE[comparison['subset']]}{where} "
            f"({comparison['n_cases']} case(s), classes {', '.join(comparison['class_names'])}).")


def format_markdown(comparison: dict, figure: str | None = None) -> str:
    """``comparison.md``: the command, the subset, the table, the paired differences (to
    plain, of the backbone, of rendering), each interval with its n."""
    boot = comparison["bootstrap"]
    lines = [
        f"# Comparison on the {comparison['subset']} subset", "", "Produced by:", "",
        f"    {comparison['command']}", "",
        _subset_line(comparison) + " Each cell: mean ± standard deviation over seeds of the "
        "foreground mean (the mean over classes of the per-class means over cases). "
        f"Distances in {comparison['distance_unit']}; the renderer's variants list their "
        "rendered output and, beside it, their coarse (backbone) output. Empty masks: "
        "(case, class) pairs over all seeds where exactly one of prediction and truth is "
        "empty (a missed or hallucinated class; its HD95 and ASD are set to the image "
        "diagonal) / where both are (distance 0), of all pairs, and the share of the HD95 "
        "mean that the one-empty pairs make up. Train: wall seconds of training per run, "
        "mean ± std over seeds, every sitting of a resumed run added. Checkpoints scored: "
        f"{_checkpoint_files(comparison)} (each run's file and step in comparison.json).", "",
        *_summary_table(comparison), "",
    ]
    method = (
        "same seed and same case on both sides, the classes averaged inside each case: mean "
        "[95% percentile interval of a two-way cluster bootstrap: each of "
        f"{boot['resamples']:,} resamples draws the seeds and the cases with replacement, "
        f"generator seed {boot['seed']}]. n: the independent units the interval rests on; "
        f"with fewer than {boot['min_units']} seeds or cases (†) it cannot measure that "
        "level's variation (3 seeds: the interval is the range of the per-seed differences)."
    )
    if comparison["paired"]:
        lines += [
            f"## Paired differences to {PLAIN}", "",
            f"The variant's output minus {PLAIN}'s, {method} Higher is better for Dice, NSD "
            "and bIoU; lower for HD95 and ASD.", "", *_paired_table(comparison), "",
        ]
        if figure:
            lines += [f"![paired differences per class]({figure})", ""]
    else:
        lines += [f"No paired differences: {PLAIN} is not among the variants.", ""]
    if comparison.get("backbone"):
        lines += [
            "## The backbone trained with the renderer: coarse output − plain", "",
            f"Each renderer variant's coarse (backbone) output minus {PLAIN}'s, paired and "
            "resampled as above: did training with the renderer change the backbone itself?",
            "", *_paired_table(comparison, "backbone"), "",
        ]
    if comparison.get("rendering"):
        lines += [
            "## Rendering against the same runs' coarse output", "",
            "Each renderer variant's rendered output minus its own coarse (backbone) output, "
            "paired and resampled as above: what rendering changes with the backbone held "
            "fixed.", "", *_paired_table(comparison, "rendering"), "",
        ]
    return "\n".join(lines)
