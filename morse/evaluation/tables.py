"""Summaries of :mod:`morse.metrics` results: means, ``metrics.json``,
``metrics.csv`` and the printed table, each saying its distance unit.

Per-case results are ``{case_id: {class_label: ClassMetrics}}``; several outputs (``"coarse"``,
``"rendered"``) are ``{output_name: per_case}``. ``distance_unit`` is ``"mm"`` or ``"voxels"``
(datasets without a voxel size): it labels HD95, ASD, the empty-mask penalty and the NSD and
bIoU tolerances.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from morse.io import atomic_write_text
from morse.metrics import DISTANCE_METRICS, ClassMetrics, MetricSettings

__all__ = [
    "DISTANCE_UNITS",
    "FOREGROUND",
    "class_label_names",
    "csv_column",
    "empty_mask_policy",
    "format_table",
    "metric_header",
    "summarise",
    "write_metrics",
]

#: Key of the mean over foreground classes in :func:`summarise` output.
FOREGROUND = "foreground"

#: The units a distance can be in.
DISTANCE_UNITS = ("mm", "voxels")

_POLICIES = ("both_empty", "one_empty")
_RESERVED = ("class_names", "distance_unit", "settings", "policy", "checkpoint")
_TABLE_METRICS = ("dice", "hd95", "nsd", "biou")  # the printed table's columns ("nsd": all)


def empty_mask_policy(distance_unit: str = "mm") -> str:
    """One-line statement of the empty-mask policy; written into ``metrics.json``."""
    _check_unit(distance_unit)
    return (
        "both prediction and truth empty: dice=iou=nsd=biou=1, hd95=asd=0 (both_empty); "
        "exactly one empty: dice=iou=nsd=biou=0, hd95=asd=image diagonal in "
        f"{distance_unit} (one_empty); never hd95=0 for a missed or hallucinated class"
    )


def _check_unit(distance_unit: str) -> None:
    if distance_unit not in DISTANCE_UNITS:
        raise ValueError(f"distance_unit must be one of {DISTANCE_UNITS}, got {distance_unit!r}")


def metric_header(name: str, distance_unit: str = "mm") -> str:
    """Column title of a metric in tables.

    >>> [metric_header(n, "voxels") for n in ("dice", "hd95", "nsd_1mm", "biou")]
    ['Dice', 'HD95 (voxels)', 'NSD@1 voxels', 'bIoU']
    >>> metric_header("nsd_0.5mm")
    'NSD@0.5 mm'
    """
    _check_unit(distance_unit)
    if name.startswith("nsd_") and name.endswith("mm"):
        return f"NSD@{name[4:-2]} {distance_unit}"
    fixed = {"dice": "Dice", "iou": "IoU", "biou": "bIoU", "hd95": "HD95", "asd": "ASD"}
    title = fixed.get(name, name)
    return f"{title} ({distance_unit})" if name in DISTANCE_METRICS else title


def csv_column(name: str, distance_unit: str = "mm") -> str:
    """CSV column of a metric: distances carry their unit.

    >>> csv_column("hd95", "voxels"), csv_column("dice", "voxels")
    ('hd95_voxels', 'dice')
    """
    _check_unit(distance_unit)
    return f"{name}_{distance_unit}" if name in DISTANCE_METRICS else name


def class_label_names(class_names: Sequence[str], labels: Sequence[int]) -> dict[int, str]:
    """Map foreground labels to names.

    ``class_names`` may list all K labels, background first (``["background", "aorta", ...]``,
    ``class_names[c]`` names label ``c``), or only the K-1 foreground labels
    (``class_names[c - 1]`` names label ``c``); which one is told by its length.

    >>> class_label_names(["bg", "liver", "spleen"], [1, 2])
    {1: 'liver', 2: 'spleen'}
    >>> class_label_names(["liver", "spleen"], [1, 2])
    {1: 'liver', 2: 'spleen'}
    """
    labels = sorted(int(c) for c in labels)
    if not labels:
        return {}
    k_fg = labels[-1]
    if len(class_names) == k_fg + 1:
        names = {c: str(class_names[c]) for c in labels}
    elif len(class_names) == k_fg:
        names = {c: str(class_names[c - 1]) for c in labels}
    else:
        raise ValueError(
            f"class_names has {len(class_names)} names but the labels run to {k_fg}: pass "
            f"{k_fg + 1} names (background first) or {k_fg} foreground names"
        )
    if len(set(names.values())) != len(names) or FOREGROUND in names.values():
        raise ValueError(
            f"class names must be distinct and not {FOREGROUND!r}, got {list(names.values())}"
        )
    return names


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _metric_names(per_case: Mapping[str, Mapping[int, ClassMetrics]]) -> list[str]:
    """Metric names in the order the results hold them."""
    return list(dict.fromkeys(k for m in per_case.values() for cm in m.values() for k in cm.values))


def summarise(
    per_case: Mapping[str, Mapping[int, ClassMetrics]], class_names: Sequence[str]
) -> dict:
    """Means over cases per class, the mean over foreground classes, and policy counts.

    Args:
        per_case: ``{case_id: {class_label: ClassMetrics}}`` as from ``case_metrics``.
        class_names: see :func:`class_label_names`.

    Returns:
        ``{"mean": {name: {metric: mean}, ..., "foreground": {...}},
        "empty_policy": {"both_empty": n, "one_empty": n}, "n_cases": N}``, where
        ``"foreground"`` is the mean of the per-class means, and the policy counts are over
        all (case, class) pairs.

    >>> m = {"a": {1: ClassMetrics({"dice": 0.5, "hd95": 2.0})},
    ...      "b": {1: ClassMetrics({"dice": 1.0, "hd95": 0.0}, "both_empty")}}
    >>> s = summarise(m, ["bg", "liver"])
    >>> s["mean"]["liver"]["dice"], s["mean"]["foreground"]["hd95"], s["empty_policy"]
    (0.75, 1.0, {'both_empty': 1, 'one_empty': 0})
    """
    if not per_case:
        raise ValueError("summarise needs at least one case")
    labels = sorted({c for metrics in per_case.values() for c in metrics})
    names = class_label_names(class_names, labels)
    keys = _metric_names(per_case)
    mean: dict[str, dict[str, float]] = {}
    for c in labels:
        rows = [metrics[c] for metrics in per_case.values() if c in metrics]
        mean[names[c]] = {k: _mean([float(r[k]) for r in rows]) for k in keys}
    mean[FOREGROUND] = {k: _mean([mean[names[c]][k] for c in labels]) for k in keys}
    counts = {p: 0 for p in _POLICIES}
    for metrics in per_case.values():
        for m in metrics.values():
            if m.policy in counts:
                counts[m.policy] += 1
    return {"mean": mean, "empty_policy": counts, "n_cases": len(per_case)}


def _output_block(per_case, class_names, distance_unit: str) -> dict:
    labels = sorted({c for metrics in per_case.values() for c in metrics})
    names = class_label_names(class_names, labels)
    return {
        "distance_unit": distance_unit,
        "per_case": {
            str(case): {names[c]: metrics[c].to_dict() for c in sorted(metrics)}
            for case, metrics in per_case.items()
        },
        **summarise(per_case, class_names),
    }


def _csv_text(blocks: Mapping[str, dict], keys: Sequence[str], distance_unit: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["output", "case", "class", *(csv_column(k, distance_unit) for k in keys),
                     "policy"])
    for output, block in blocks.items():
        for case, per_class in block["per_case"].items():
            for name, m in per_class.items():
                writer.writerow([output, case, name, *(repr(m[k]) for k in keys), m["policy"]])
        for name, m in block["mean"].items():
            writer.writerow([output, "mean", name, *(repr(m[k]) for k in keys), ""])
    return buf.getvalue()


def write_metrics(
    out_dir: str | os.PathLike,
    results: Mapping[str, Mapping[str, Mapping[int, ClassMetrics]]],
    class_names: Sequence[str],
    *,
    distance_unit: str = "mm",
    settings: MetricSettings | None = None,
    checkpoint: Mapping[str, object] | None = None,
    extra: Mapping[str, object] | None = None,
) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics.csv`` into ``out_dir`` (atomically).

    Args:
        out_dir: folder, created if missing.
        results: ``{output_name: {case_id: {class_label: ClassMetrics}}}``, e.g. outputs
            ``"coarse"`` and ``"rendered"``.
        class_names: see :func:`class_label_names`.
        distance_unit: ``"mm"`` or ``"voxels"``, the unit of the spacing the results used.
        settings: the NSD tolerances and bIoU width used (recorded; default the defaults).
        checkpoint: what was scored, e.g. ``{"file": "last.pt", "step": 30000}`` (recorded).
        extra: more top-level entries to record (JSON values), e.g. ``{"missing": {...}}``
            from ``morse score``; their names must not clash with the others.

    ``metrics.json``::

        {"coarse": {"distance_unit": "mm",
                    "per_case": {case: {class_name: {dice, iou, hd95, asd, nsd_1mm,
                                                     nsd_2mm, biou, policy}}},
                    "mean": {class_name: {dice, ..., biou}, ..., "foreground": {...}},
                    "empty_policy": {"both_empty": n, "one_empty": n},
                    "n_cases": N},
         "rendered": {...},
         "class_names": [foreground names in label order],
         "distance_unit": "mm",
         "settings": {"nsd_tolerances": [1.0, 2.0], "biou_width": 2.0},
         "checkpoint": {"file": "best.pt", "step": 500},   # when given
         "policy": empty_mask_policy(distance_unit)}

    ``metrics.csv``: header ``output,case,class,dice,iou,hd95_mm,asd_mm,nsd_1mm,nsd_2mm,biou,
    policy`` (``hd95_voxels``, ``asd_voxels`` in voxels), one row per (output, case, class),
    then per output the mean rows with ``case = "mean"`` and ``class`` a class name or
    ``"foreground"``.

    Returns:
        ``(json_path, csv_path)``.
    """
    _check_unit(distance_unit)
    if any(name in results for name in _RESERVED):
        raise ValueError(f"output names {_RESERVED} are reserved in metrics.json")
    blocks = {str(name): _output_block(per_case, class_names, distance_unit)
              for name, per_case in results.items()}
    labels = sorted({c for pc in results.values() for m in pc.values() for c in m})
    keys = list(dict.fromkeys(k for pc in results.values() for k in _metric_names(pc)))
    doc: dict = dict(blocks)
    doc["class_names"] = list(class_label_names(class_names, labels).values())
    doc["distance_unit"] = distance_unit
    doc["settings"] = (settings or MetricSettings()).to_dict()
    if checkpoint is not None:
        doc["checkpoint"] = dict(checkpoint)
    clashes = set(extra or {}) & (set(doc) | {"policy"})
    if clashes:
        raise ValueError(f"extra entries {sorted(clashes)} clash with metrics.json's own")
    doc.update(extra or {})
    doc["policy"] = empty_mask_policy(distance_unit)
    out = Path(out_dir)
    json_path = atomic_write_text(out / "metrics.json", json.dumps(doc, indent=2, allow_nan=False))
    csv_path = atomic_write_text(out / "metrics.csv", _csv_text(blocks, keys, distance_unit))
    return json_path, csv_path


def _fmt(value: float, digits: int) -> str:
    return "nan" if value is None or not math.isfinite(float(value)) else f"{value:.{digits}f}"


def _table_keys(mean: Mapping[str, Mapping[str, float]]) -> list[str]:
    present = list(mean.get(FOREGROUND, next(iter(mean.values()), {})))
    return [k for k in present if k.split("_")[0] in _TABLE_METRICS]


def _aligned(header: list[str], body: list[list[str]]) -> tuple[list[str], list[int]]:
    """Lines of a table whose first column is left-aligned and the others right-aligned, with
    a rule under the header and above the last row; and the column widths."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([cells[0].ljust(widths[0]), *rest]).rstrip()

    rule = render(["-" * w for w in widths])
    lines = [render(header), rule, *(render(r) for r in body[:-1]), rule, render(body[-1])]
    return lines, widths


def format_table(
    summary_by_output: Mapping[str, dict], class_names: Sequence[str], distance_unit: str = "mm"
) -> str:
    """A plain-text table: one row per class plus the foreground mean; for each output
    (e.g. coarse, rendered) side by side its mean Dice, HD95, NSDs and bIoU.

    Args:
        summary_by_output: ``{output_name: summarise(...)}`` (a ``metrics.json`` output block
            works too: only its ``"mean"`` is read).
        class_names: row order; names absent from the summaries (e.g. background) are skipped.
        distance_unit: ``"mm"`` or ``"voxels"``, named in the headers.

    >>> s = {"coarse": {"mean": {"liver": {"dice": 0.9, "hd95": 4.0, "biou": 0.5},
    ...                          "foreground": {"dice": 0.9, "hd95": 4.0, "biou": 0.5}}}}
    >>> print(format_table(s, ["background", "liver"]))
                coarse
    class         Dice  HD95 (mm)    bIoU
    ----------  ------  ---------  ------
    liver       0.9000       4.00  0.5000
    ----------  ------  ---------  ------
    foreground  0.9000       4.00  0.5000
    """
    outputs = list(summary_by_output)
    first = summary_by_output[outputs[0]]["mean"] if outputs else {}
    names = [str(n) for n in class_names if str(n) in first and str(n) != FOREGROUND]
    names += [n for n in first if n not in names and n != FOREGROUND]
    keys = _table_keys(first)
    header = ["class", *[metric_header(k, distance_unit) for k in keys] * len(outputs)]
    body = []
    for name in [*names, FOREGROUND]:
        line = [name]
        for out in outputs:
            m = summary_by_output[out]["mean"].get(name, {})
            line += [_fmt(m.get(k, float("nan")), 2 if k in DISTANCE_METRICS else 4) for k in keys]
        body.append(line)
    lines, widths = _aligned(header, body)
    groups, start = " " * widths[0], 1
    for out in outputs:
        span = sum(widths[start : start + len(keys)]) + 2 * (len(keys) - 1)
        groups += "  " + out.ljust(span)
        start += len(keys)
    return "\n".join([groups.rstrip(), *lines])
