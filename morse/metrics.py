"""Segmentation metrics per foreground class, computed by MONAI, with an explicit empty-mask
policy on top.

Shapes: label maps are (H, W) or (D, H, W) integer arrays; masks are boolean arrays of the same
shape; ``spacing`` has one voxel size per array axis.

* **Dice**, **IoU**: ``monai.metrics.compute_dice``, ``compute_iou``.
* **HD95**: ``compute_hausdorff_distance(percentile=95)``, symmetric: the larger of the two
  directed 95th percentiles of the surface distances.
* **ASD**: ``compute_average_surface_distance(symmetric=True)``, the mean over the surface
  distances of both directions pooled together.
* **NSD** ``nsd_<t>mm``: ``compute_surface_dice`` at tolerance ``t`` (default 1 and 2): the share
  of both surfaces' voxels within ``t`` of the other surface (voxels counted, MONAI's default).
* **bIoU** ``biou``: boundary IoU (Cheng et al., CVPR 2021), the IoU of the two masks' boundary
  bands; a band is the mask's surface voxels and every mask voxel within ``d`` of one
  (Euclidean, with the spacing; default ``d = 2``). See :func:`boundary_iou`.

A surface voxel, for every metric here, is a mask voxel with a face neighbour outside the mask
(MONAI's ``get_mask_edges``; outside the image counts as outside).

Units: distances (HD95, ASD, NSD tolerances, bIoU width, the empty-mask penalty) are in the unit
of ``spacing``: mm from an image's affine, voxels when a dataset has no voxel size and
``spacing`` is all ones. The caller records which (``distance_unit`` in
:func:`morse.evaluation.tables.write_metrics`); NSD names stay ``nsd_<t>mm``, ``t`` voxels then.

Singleton axes are not spatial axes: a 2D image stored as (H, W, 1) has a 2D surface, while in
3D every foreground pixel would be surface (its neighbours across the missing axis lie outside
the image). :func:`squeeze_singleton_axes` drops such axes, with their spacing, first.

Empty-mask policy
-----------------
Surface metrics are undefined when a mask is empty (MONAI returns nan or inf), and every
evaluation has to choose a number. Ours, for each class of each case:

* prediction and truth both empty (class absent and correctly not predicted): ``dice = iou =
  nsd = biou = 1``, ``hd95 = asd = 0``; policy ``"both_empty"``.
* exactly one of them empty (class missed entirely, or predicted where there is none):
  ``dice = iou = nsd = biou = 0``, ``hd95 = asd =`` the image diagonal
  ``sqrt(sum((shape_i * spacing_i) ** 2))``, the worst distance the image allows; policy
  ``"one_empty"``.
* both non-empty: measured, policy ``""``.

The authors' public evaluation scored HD95 = 0 for an empty prediction against a non-empty truth,
which rewards missing an organ with a perfect distance; we never do that. How often each policy
fired is counted by :func:`morse.evaluation.tables.summarise` and written to ``metrics.json``.

Example (two 4 x 4 squares offset by one column, 1 mm pixels)::

    >>> import numpy as np
    >>> truth = np.zeros((8, 8), int); truth[2:6, 2:6] = 1
    >>> pred = np.zeros((8, 8), int); pred[2:6, 3:7] = 1
    >>> m = case_metrics(pred, truth, num_classes=2, spacing=(1.0, 1.0))[1]
    >>> {k: round(v, 3) for k, v in m.values.items()}
    {'dice': 0.75, 'iou': 0.6, 'hd95': 1.0, 'asd': 0.5, 'nsd_1mm': 1.0, 'nsd_2mm': 1.0, 'biou': 0.6}
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_surface_dice,
)
from monai.metrics.utils import get_mask_edges
from scipy.ndimage import distance_transform_edt

__all__ = [
    "DISTANCE_METRICS",
    "ClassMetrics",
    "MetricSettings",
    "boundary_iou",
    "case_dice",
    "case_metrics",
    "image_diagonal",
    "nsd_name",
    "squeeze_singleton_axes",
]

#: Metrics that are distances (in the unit of the spacing); every other metric lies in [0, 1].
DISTANCE_METRICS: tuple[str, ...] = ("hd95", "asd")


def nsd_name(tolerance: float) -> str:
    """Metric name of the NSD at ``tolerance``.

    >>> nsd_name(1.0), nsd_name(0.5)
    ('nsd_1mm', 'nsd_0.5mm')
    """
    return f"nsd_{float(tolerance):g}mm"


@dataclass(frozen=True)
class MetricSettings:
    """The tolerances of the boundary metrics, in the unit of the spacing.

    Attributes:
        nsd_tolerances: one NSD per tolerance (config ``eval.nsd_tolerances_mm``).
        biou_width: width ``d`` of the boundary bands of bIoU (config ``eval.biou_width_mm``).
    """

    nsd_tolerances: tuple[float, ...] = (1.0, 2.0)
    biou_width: float = 2.0

    def __post_init__(self) -> None:
        tolerances = tuple(float(t) for t in self.nsd_tolerances)
        if any(not (math.isfinite(t) and t >= 0) for t in tolerances):
            raise ValueError(f"eval.nsd_tolerances_mm must be finite and >= 0, got {tolerances}")
        if len({nsd_name(t) for t in tolerances}) != len(tolerances):
            raise ValueError(f"eval.nsd_tolerances_mm has repeated values: {tolerances}")
        if not (math.isfinite(self.biou_width) and self.biou_width >= 0):
            raise ValueError(f"eval.biou_width_mm must be finite and >= 0, got {self.biou_width}")
        object.__setattr__(self, "nsd_tolerances", tolerances)

    @property
    def names(self) -> tuple[str, ...]:
        """Metric names in table order.

        >>> MetricSettings().names
        ('dice', 'iou', 'hd95', 'asd', 'nsd_1mm', 'nsd_2mm', 'biou')
        """
        return ("dice", "iou", *DISTANCE_METRICS, *map(nsd_name, self.nsd_tolerances), "biou")

    def to_dict(self) -> dict[str, list[float] | float]:
        """``{"nsd_tolerances": [...], "biou_width": d}`` as plain Python values."""
        return {"nsd_tolerances": list(self.nsd_tolerances), "biou_width": self.biou_width}


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one foreground class in one case.

    ``values`` maps metric names (:attr:`MetricSettings.names`) to values; ``policy`` is ``""``
    when both masks are non-empty and the values were measured, else ``"both_empty"`` or
    ``"one_empty"`` (see the module docstring).
    """

    values: dict[str, float] = field(default_factory=dict)
    policy: str = ""

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def to_dict(self) -> dict[str, float | str]:
        """The values and ``"policy"`` as one flat dict of plain Python values."""
        return {**self.values, "policy": self.policy}


def image_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length of the image diagonal, ``sqrt(sum((shape_i * spacing_i) ** 2))``.

    >>> image_diagonal((3, 4), (1.0, 1.0))
    5.0
    >>> image_diagonal((10, 10, 4), (0.5, 0.5, 3.0))  # sqrt(25 + 25 + 144)
    13.92838827718412
    """
    if len(shape) != len(spacing):
        raise ValueError(f"shape {tuple(shape)} and spacing {tuple(spacing)} differ in length")
    pairs = zip(shape, spacing, strict=True)
    return float(math.sqrt(sum((float(n) * float(s)) ** 2 for n, s in pairs)))


def squeeze_singleton_axes(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Drop axes of length 1 and their spacing, keeping at least two axes.

    Args:
        pred, truth: arrays of the same shape, e.g. (H, W, 1).
        spacing: one voxel size per axis.

    Returns:
        ``(pred, truth, spacing)`` without the singleton axes, e.g. (H, W) and two sizes.

    >>> a = np.zeros((5, 4, 1)); p, t, s = squeeze_singleton_axes(a, a, (0.5, 0.7, 3.0))
    >>> p.shape, s
    ((5, 4), (0.5, 0.7))
    """
    singletons = [i for i, n in enumerate(pred.shape) if n == 1]
    drop = tuple(singletons[: max(pred.ndim - 2, 0)])
    kept = tuple(float(s) for i, s in enumerate(spacing) if i not in drop)
    return np.squeeze(pred, axis=drop), np.squeeze(truth, axis=drop), kept


def _crop_to_union(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of ``p | t`` (non-empty).

    Exact for every metric here: outside the box both masks are empty, as is outside the image
    for MONAI's surfaces. It spares MONAI a whole-volume one-hot copy per metric and class.
    """
    union = p | t
    box = []
    for axis in range(union.ndim):
        hits = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return p[tuple(box)], t[tuple(box)]


@contextmanager
def _monai_quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        # MONAI 1.6 passes its own deprecated ``always_return_as_numpy`` argument internally.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        yield


def _batch(mask: np.ndarray) -> torch.Tensor:
    """(*spatial) bool -> (1, 1, *spatial), MONAI's one-hot batch of one class."""
    return torch.as_tensor(np.ascontiguousarray(mask, dtype=bool))[None, None]


def _overlap(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    yp, yt = _batch(p), _batch(t)
    return {
        "dice": float(compute_dice(yp, yt, include_background=True)[0, 0]),
        "iou": float(compute_iou(yp, yt, include_background=True)[0, 0]),
    }


def _surface(
    p: np.ndarray, t: np.ndarray, spacing: Sequence[float], tolerances: Sequence[float]
) -> dict[str, float]:
    """HD95, ASD and the NSDs of two non-empty masks."""
    yp, yt, sp = _batch(p), _batch(t), [float(s) for s in spacing]
    common = {"include_background": True, "spacing": sp}
    with _monai_quiet():
        out = {
            "hd95": compute_hausdorff_distance(yp, yt, percentile=95, **common),
            "asd": compute_average_surface_distance(yp, yt, symmetric=True, **common),
        }
        for tol in tolerances:
            out[nsd_name(tol)] = compute_surface_dice(yp, yt, [float(tol)], **common)
    return {name: float(value[0, 0]) for name, value in out.items()}


def boundary_iou(
    pred_mask: np.ndarray, truth_mask: np.ndarray, spacing: Sequence[float], width: float
) -> float:
    """Boundary IoU (Cheng et al., CVPR 2021) of two non-empty masks.

    The band of a mask is its surface voxels (MONAI's ``get_mask_edges``) and every mask voxel
    within ``width`` of one (Euclidean distance between voxel centres, with the spacing).

    Args:
        pred_mask, truth_mask: boolean arrays of the same shape (H, W) or (D, H, W).
        spacing: voxel size per axis.
        width: band width ``d`` in the unit of ``spacing``; ``0`` keeps the surface voxels only.

    Returns:
        ``|B_p & B_t| / |B_p | B_t|`` of the two bands.

    >>> a = np.zeros((8, 8), bool); a[2:6, 2:6] = True; b = np.roll(a, 1, axis=1)
    >>> round(boundary_iou(b, a, (1.0, 1.0), 0.0), 4)  # two 12-pixel rings sharing 6
    0.3333
    """
    with _monai_quiet():
        edges = get_mask_edges(pred_mask, truth_mask, crop=False)
    bands = [
        mask & (distance_transform_edt(~edge, sampling=spacing) <= width)
        for mask, edge in zip((pred_mask, truth_mask), edges, strict=True)
    ]
    return float(np.logical_and(*bands).sum() / np.logical_or(*bands).sum())


def _empty_policy(names: Sequence[str], both_empty: bool, diagonal: float) -> ClassMetrics:
    score, distance = (1.0, 0.0) if both_empty else (0.0, diagonal)
    values = {n: distance if n in DISTANCE_METRICS else score for n in names}
    return ClassMetrics(values, "both_empty" if both_empty else "one_empty")


def _class_metrics(
    p: np.ndarray, t: np.ndarray, spacing: Sequence[float], settings: MetricSettings
) -> ClassMetrics:
    """Metrics of one class from boolean masks ``p`` (prediction) and ``t`` (truth)."""
    has_p, has_t = bool(p.any()), bool(t.any())
    if not (has_p and has_t):
        return _empty_policy(settings.names, not (has_p or has_t), image_diagonal(p.shape, spacing))
    p, t = _crop_to_union(p, t)
    values = {
        **_overlap(p, t),
        **_surface(p, t, spacing, settings.nsd_tolerances),
        "biou": boundary_iou(p, t, spacing, settings.biou_width),
    }
    return ClassMetrics({n: values[n] for n in settings.names})


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


def case_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    spacing: Sequence[float],
    settings: MetricSettings | None = None,
) -> dict[int, ClassMetrics]:
    """Every metric of every foreground class of one case.

    Args:
        pred: integer label map, shape (H, W) or (D, H, W), labels in ``[0, num_classes)``;
            axes of length 1 are dropped first (:func:`squeeze_singleton_axes`).
        truth: integer label map of the same shape.
        num_classes: K, number of labels including background 0.
        spacing: voxel size along each axis of ``pred`` (mm, or ones for voxels).
        settings: NSD tolerances and bIoU width (default :class:`MetricSettings`).

    Returns:
        ``{c: ClassMetrics}`` for ``c = 1 .. K-1``, values named ``settings.names``; empty
        masks follow the module's empty-mask policy.

    Raises:
        ValueError: shapes differ (message names both), ``len(spacing) != ndim``, non-positive
            spacing, labels out of range or a non-integer map.

    >>> truth = np.array([[0, 1, 1], [0, 2, 2]])
    >>> out = case_metrics(truth, truth, num_classes=4, spacing=(1.0, 1.0))
    >>> [(c, m["dice"], m["hd95"], m["biou"], m.policy) for c, m in out.items()]
    [(1, 1.0, 0.0, 1.0, ''), (2, 1.0, 0.0, 1.0, ''), (3, 1.0, 0.0, 1.0, 'both_empty')]
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    _validate(pred, truth, num_classes, spacing)
    pred, truth, spacing = squeeze_singleton_axes(pred, truth, spacing)
    settings = settings or MetricSettings()
    return {
        c: _class_metrics(pred == c, truth == c, spacing, settings) for c in range(1, num_classes)
    }


def case_dice(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> dict[int, float]:
    """Dice of every foreground class under the same empty-mask policy as :func:`case_metrics`
    (both empty 1, one empty 0): the cheap subset that training validation uses.

    Args:
        pred, truth: integer label maps of the same shape (H, W) or (D, H, W).
        num_classes: K, including background 0.

    Returns:
        ``{c: dice}`` for ``c = 1 .. K-1``.

    >>> d = case_dice(np.array([[0, 1, 1, 2]]), np.array([[0, 1, 2, 2]]), 4)
    >>> {c: round(v, 4) for c, v in d.items()}
    {1: 0.6667, 2: 0.6667, 3: 1.0}
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    _validate(pred, truth, num_classes, (1.0,) * pred.ndim)
    scores = {}
    for c in range(1, num_classes):
        p, t = pred == c, truth == c
        has_p, has_t = bool(p.any()), bool(t.any())
        if has_p and has_t:
            p, t = _crop_to_union(p, t)
            scores[c] = float(compute_dice(_batch(p), _batch(t), include_background=True)[0, 0])
        else:
            scores[c] = float(not (has_p or has_t))
    return scores
