"""Segmentation metrics: Dice, IoU, HD95 and ASD per foreground class, with an explicit
empty-mask policy.

Distances are in millimetres: the voxel ``spacing`` (one value per array axis) is passed to
MONAI's surface-distance utilities (:func:`monai.metrics.utils.get_edge_surface_distance`,
the same code behind ``compute_hausdorff_distance`` and ``compute_average_surface_distance``),
so anisotropic CT voxels (e.g. 0.7 x 0.7 x 3 mm) are measured correctly.

* **Dice** ``2|P∩T| / (|P| + |T|)`` and **IoU** ``|P∩T| / |P∪T|`` by counting voxels.
* **HD95**: the 95th percentile Hausdorff distance, symmetric as in MONAI: the larger of the
  95th percentile of the surface distances prediction→truth and truth→prediction.
* **ASD**: the symmetric average surface distance, the mean over the surface distances in both
  directions pooled together (MONAI ``compute_average_surface_distance(symmetric=True)``).

Empty-mask policy
-----------------
Surface distances are undefined when a mask is empty, and every evaluation has to choose a
number. This module's choice, fixed in :data:`EMPTY_MASK_POLICY`, for each class of each case:

* prediction and truth both empty (class absent and correctly not predicted):
  ``dice = iou = 1``, ``hd95 = asd = 0``, policy ``"both_empty"``.
* exactly one of them empty (class missed entirely, or predicted where there is none):
  ``dice = iou = 0``, ``hd95 = asd =`` the image diagonal in mm,
  ``sqrt(sum((shape_i * spacing_i) ** 2))``, the worst distance the image allows;
  policy ``"one_empty"``.
* both non-empty: measured, policy ``""``.

The authors' public evaluation code (TransUNet-style, medpy) scored HD95 = 0 for an empty
prediction against a non-empty truth, which rewards missing an organ with a perfect distance;
we never do that. How often each policy fired is counted by :func:`summarise` and written to
``metrics.json`` so a reader can see how much of a mean rests on it.

Example (two 4 x 4 squares offset by one column, 1 mm pixels)::

    >>> import numpy as np
    >>> truth = np.zeros((8, 8), int); truth[2:6, 2:6] = 1
    >>> pred = np.zeros((8, 8), int); pred[2:6, 3:7] = 1
    >>> m = case_metrics(pred, truth, num_classes=2, spacing=(1.0, 1.0))[1]
    >>> (m.dice, round(m.iou, 3), m.hd95, m.asd, m.policy)
    (0.75, 0.6, 1.0, 0.5, '')
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from morse.io import atomic_write_text

__all__ = [
    "EMPTY_MASK_POLICY",
    "METRIC_NAMES",
    "ClassMetrics",
    "case_metrics",
    "class_label_names",
    "format_table",
    "image_diagonal_mm",
    "summarise",
    "surface_distances",
    "write_metrics",
]

#: One-line statement of the empty-mask policy; written into ``metrics.json`` as ``"policy"``.
EMPTY_MASK_POLICY = (
    "both prediction and truth empty: dice=iou=1, hd95=asd=0 (both_empty); "
    "exactly one empty: dice=iou=0, hd95=asd=image diagonal in mm (one_empty); "
    "never hd95=0 for a missed or hallucinated class"
)

#: The numeric metrics of :class:`ClassMetrics`, in table order.
METRIC_NAMES: tuple[str, ...] = ("dice", "iou", "hd95", "asd")

#: Key of the mean over foreground classes in :func:`summarise` output.
FOREGROUND = "foreground"

_POLICIES = ("both_empty", "one_empty")


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one foreground class in one case.

    ``hd95`` and ``asd`` are in mm. ``policy`` is ``""`` when both masks are non-empty and the
    values were measured, else ``"both_empty"`` or ``"one_empty"`` (see module docstring).
    """

    dice: float
    iou: float
    hd95: float
    asd: float
    policy: str = ""

    def to_dict(self) -> dict[str, float | str]:
        """``{"dice", "iou", "hd95", "asd", "policy"}`` as plain Python values."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# per case
# --------------------------------------------------------------------------------------------


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length of the image diagonal in mm, ``sqrt(sum((shape_i * spacing_i) ** 2))``.

    >>> image_diagonal_mm((3, 4), (1.0, 1.0))
    5.0
    >>> image_diagonal_mm((10, 10, 4), (0.5, 0.5, 3.0))  # sqrt(25 + 25 + 144)
    13.92838827718412
    """
    if len(shape) != len(spacing):
        raise ValueError(f"shape {tuple(shape)} and spacing {tuple(spacing)} differ in length")
    pairs = zip(shape, spacing, strict=True)
    return float(math.sqrt(sum((float(n) * float(s)) ** 2 for n, s in pairs)))


def _validate(pred: np.ndarray, truth: np.ndarray, num_classes: int, spacing: Sequence[float]):
    if pred.shape != truth.shape:
        raise ValueError(
            f"pred and truth must have the same shape, got pred {pred.shape} "
            f"and truth {truth.shape}"
        )
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D label map, got shape {pred.shape}")
    if len(spacing) != pred.ndim:
        raise ValueError(
            f"spacing has {len(spacing)} values {tuple(spacing)} but the label maps have "
            f"{pred.ndim} dimensions (shape {pred.shape})"
        )
    if any(not (float(s) > 0 and math.isfinite(float(s))) for s in spacing):
        raise ValueError(f"spacing must be finite and positive, got {tuple(spacing)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + 1 class), got {num_classes}")
    for name, arr in (("pred", pred), ("truth", truth)):
        if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool:
            raise ValueError(f"{name} must be an integer label map, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes - 1}], "
                f"got range [{arr.min()}, {arr.max()}]"
            )


def surface_distances(
    pred_mask: np.ndarray, truth_mask: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Surface distances in mm between two non-empty boolean masks, via MONAI.

    Args:
        pred_mask, truth_mask: boolean arrays of the same shape (H, W) or (D, H, W).
        spacing: one voxel size in mm per axis.

    Returns:
        ``(pred_to_truth, truth_to_pred)``: 1D float arrays, the distance from each surface
        voxel of one mask to the nearest surface voxel of the other.
    """
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():
        # MONAI 1.6 passes its own deprecated ``always_return_as_numpy`` argument internally.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        _, distances, _ = get_edge_surface_distance(
            torch.as_tensor(np.ascontiguousarray(pred_mask, dtype=bool)),
            torch.as_tensor(np.ascontiguousarray(truth_mask, dtype=bool)),
            distance_metric="euclidean",
            spacing=[float(s) for s in spacing],
            symmetric=True,
            warn_empty=False,
        )
    p2t, t2p = (np.asarray(torch.as_tensor(d).double().cpu().numpy()) for d in distances)
    return p2t, t2p


def _class_metrics(p: np.ndarray, t: np.ndarray, spacing: Sequence[float]) -> ClassMetrics:
    """Metrics of one class from boolean masks ``p`` (prediction) and ``t`` (truth)."""
    n_p, n_t = int(p.sum()), int(t.sum())
    if n_p == 0 and n_t == 0:
        return ClassMetrics(1.0, 1.0, 0.0, 0.0, "both_empty")
    if n_p == 0 or n_t == 0:
        diag = image_diagonal_mm(p.shape, spacing)
        return ClassMetrics(0.0, 0.0, diag, diag, "one_empty")
    inter = int(np.logical_and(p, t).sum())
    dice = 2.0 * inter / (n_p + n_t)
    iou = inter / (n_p + n_t - inter)
    p2t, t2p = surface_distances(p, t, spacing)
    # MONAI's HD95: the larger of the two directed 95th percentiles (linear interpolation).
    hd95 = max(float(np.percentile(p2t, 95)), float(np.percentile(t2p, 95)))
    asd = float(np.concatenate([p2t, t2p]).mean())
    return ClassMetrics(float(dice), float(iou), hd95, asd, "")


def case_metrics(
    pred: np.ndarray, truth: np.ndarray, num_classes: int, spacing: Sequence[float]
) -> dict[int, ClassMetrics]:
    """Dice, IoU, HD95 and ASD of every foreground class of one case.

    Args:
        pred: integer label map, shape (H, W) or (D, H, W), labels in ``[0, num_classes)``.
        truth: integer label map of the same shape.
        num_classes: K, number of labels including background 0.
        spacing: voxel size in mm along each axis of ``pred`` (length ``pred.ndim``).

    Returns:
        ``{c: ClassMetrics}`` for ``c = 1 .. K-1``; empty masks follow :data:`EMPTY_MASK_POLICY`.

    Raises:
        ValueError: shapes differ (message names both), ``len(spacing) != ndim``, non-positive
            spacing, labels out of range or a non-integer map.

    >>> import numpy as np
    >>> truth = np.array([[0, 1, 1], [0, 2, 2]])
    >>> out = case_metrics(truth, truth, num_classes=4, spacing=(1.0, 1.0))
    >>> [(c, m.dice, m.hd95, m.policy) for c, m in out.items()]
    [(1, 1.0, 0.0, ''), (2, 1.0, 0.0, ''), (3, 1.0, 0.0, 'both_empty')]
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    _validate(pred, truth, num_classes, spacing)
    return {c: _class_metrics(pred == c, truth == c, spacing) for c in range(1, num_classes)}


# --------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------


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


def summarise(
    per_case: Mapping[str, Mapping[int, ClassMetrics]], class_names: Sequence[str]
) -> dict:
    """Means over cases per class, the mean over foreground classes, and policy counts.

    Args:
        per_case: ``{case_id: {class_label: ClassMetrics}}`` as from :func:`case_metrics`.
        class_names: see :func:`class_label_names`.

    Returns:
        ``{"mean": {name: {"dice", "iou", "hd95", "asd"}, ..., "foreground": {...}},
        "empty_policy": {"both_empty": n, "one_empty": n}, "n_cases": N}``, where
        ``"foreground"`` is the mean of the per-class means, and the policy counts are over
        all (case, class) pairs.

    >>> m = {"a": {1: ClassMetrics(0.5, 0.4, 2.0, 1.0)},
    ...      "b": {1: ClassMetrics(1.0, 1.0, 0.0, 0.0, "both_empty")}}
    >>> s = summarise(m, ["bg", "liver"])
    >>> s["mean"]["liver"]["dice"], s["mean"]["foreground"]["hd95"], s["empty_policy"]
    (0.75, 1.0, {'both_empty': 1, 'one_empty': 0})
    """
    if not per_case:
        raise ValueError("summarise needs at least one case")
    labels = sorted({c for metrics in per_case.values() for c in metrics})
    names = class_label_names(class_names, labels)
    mean: dict[str, dict[str, float]] = {}
    for c in labels:
        rows = [metrics[c] for metrics in per_case.values() if c in metrics]
        mean[names[c]] = {k: _mean([float(getattr(r, k)) for r in rows]) for k in METRIC_NAMES}
    mean[FOREGROUND] = {k: _mean([mean[names[c]][k] for c in labels]) for k in METRIC_NAMES}
    counts = {p: 0 for p in _POLICIES}
    for metrics in per_case.values():
        for m in metrics.values():
            if m.policy in counts:
                counts[m.policy] += 1
    return {"mean": mean, "empty_policy": counts, "n_cases": len(per_case)}


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _output_block(per_case: Mapping[str, Mapping[int, ClassMetrics]], class_names) -> dict:
    labels = sorted({c for metrics in per_case.values() for c in metrics})
    names = class_label_names(class_names, labels)
    summary = summarise(per_case, class_names)
    return {
        "per_case": {
            str(case): {names[c]: metrics[c].to_dict() for c in sorted(metrics)}
            for case, metrics in per_case.items()
        },
        **summary,
    }


def _csv_text(blocks: Mapping[str, dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["output", "case", "class", *METRIC_NAMES, "policy"])
    for output, block in blocks.items():
        for case, per_class in block["per_case"].items():
            for name, m in per_class.items():
                writer.writerow(
                    [output, case, name, *(repr(m[k]) for k in METRIC_NAMES), m["policy"]]
                )
        for name, m in block["mean"].items():
            writer.writerow([output, "mean", name, *(repr(m[k]) for k in METRIC_NAMES), ""])
    return buf.getvalue()


def write_metrics(
    out_dir: str | os.PathLike,
    results: Mapping[str, Mapping[str, Mapping[int, ClassMetrics]]],
    class_names: Sequence[str],
) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics.csv`` into ``out_dir`` (atomically).

    Args:
        out_dir: folder, created if missing.
        results: ``{output_name: {case_id: {class_label: ClassMetrics}}}``, e.g. outputs
            ``"coarse"`` and ``"rendered"``.
        class_names: see :func:`class_label_names`.

    ``metrics.json``::

        {"coarse": {"per_case": {case: {class_name: {dice, iou, hd95, asd, policy}}},
                    "mean": {class_name: {dice, iou, hd95, asd}, ..., "foreground": {...}},
                    "empty_policy": {"both_empty": n, "one_empty": n},
                    "n_cases": N},
         "rendered": {...},
         "class_names": [foreground names in label order],
         "policy": EMPTY_MASK_POLICY}

    ``metrics.csv``: header ``output,case,class,dice,iou,hd95,asd,policy``, one row per
    (output, case, class), then per output the mean rows with ``case = "mean"`` and
    ``class`` a class name or ``"foreground"``.

    Returns:
        ``(json_path, csv_path)``.
    """
    if "policy" in results or "class_names" in results:
        raise ValueError("output names 'policy' and 'class_names' are reserved in metrics.json")
    blocks = {str(name): _output_block(per_case, class_names) for name, per_case in results.items()}
    labels = sorted({c for pc in results.values() for m in pc.values() for c in m})
    doc: dict = dict(blocks)
    doc["class_names"] = list(class_label_names(class_names, labels).values())
    doc["policy"] = EMPTY_MASK_POLICY
    out = Path(out_dir)
    json_path = atomic_write_text(out / "metrics.json", json.dumps(doc, indent=2, allow_nan=False))
    csv_path = atomic_write_text(out / "metrics.csv", _csv_text(blocks))
    return json_path, csv_path


# --------------------------------------------------------------------------------------------
# text table
# --------------------------------------------------------------------------------------------


def _fmt(value: float, digits: int) -> str:
    return "nan" if value is None or not math.isfinite(float(value)) else f"{value:.{digits}f}"


def format_table(summary_by_output: Mapping[str, dict], class_names: Sequence[str]) -> str:
    """A plain-text table: one row per class plus the foreground mean, and for each output
    (e.g. coarse, rendered) side by side its mean Dice and HD95 (mm).

    Args:
        summary_by_output: ``{output_name: summarise(...)}`` (a ``metrics.json`` output block
            works too: only its ``"mean"`` is read).
        class_names: row order; names absent from the summaries (e.g. background) are skipped.

    >>> s = {"coarse": {"mean": {"liver": {"dice": 0.9, "hd95": 4.0},
    ...                          "foreground": {"dice": 0.9, "hd95": 4.0}}}}
    >>> print(format_table(s, ["background", "liver"]))
    class       coarse Dice  coarse HD95 mm
    ----------  -----------  --------------
    liver            0.9000            4.00
    ----------  -----------  --------------
    foreground       0.9000            4.00
    """
    outputs = list(summary_by_output)
    first = summary_by_output[outputs[0]]["mean"] if outputs else {}
    rows = [str(n) for n in class_names if str(n) in first and str(n) != FOREGROUND]
    rows += [n for n in first if n not in rows and n != FOREGROUND]
    header = ["class"]
    for out in outputs:
        header += [f"{out} Dice", f"{out} HD95 mm"]
    body = []
    for name in [*rows, FOREGROUND]:
        line = [name]
        for out in outputs:
            m = summary_by_output[out]["mean"].get(name, {})
            line += [_fmt(m.get("dice", float("nan")), 4), _fmt(m.get("hd95", float("nan")), 2)]
        body.append(line)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        first_cell = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first_cell, *rest]).rstrip()

    rule = render(["-" * w for w in widths])
    lines = [render(header), rule, *(render(r) for r in body[:-1]), rule, render(body[-1])]
    return "\n".join(lines)
