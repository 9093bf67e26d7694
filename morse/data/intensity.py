"""Intensity normalisation (MONAI transforms) and the preprocessing record saved with a model.

A *step* is plain data saying how one channel is normalised:

=============================================================== ==============================
step                                                            what it does
=============================================================== ==============================
``{"scheme": "none"}``                                          nothing
``{"scheme": "zscore"}``                                        mean 0, std 1 over the nonzero
                                                                voxels of each volume (zero
                                                                background stays 0)
``{"scheme": "zscore", "mean": m, "std": s}``                   the same with dataset stats
``{"scheme": "ct", "clip": [-125, 275], "scale": [0, 1]}``      clip HU, scale (TransUNet)
``{"scheme": "ct-percentile", "lower": l, "upper": u,``         clip to the dataset's 0.5 /
``"mean": m, "std": s}``                                        99.5 foreground percentiles,
                                                                z-score with its foreground
                                                                mean / std (nnU-Net's CT)
``{"scheme": "minmax"}``                                        each volume to [0, 1]
=============================================================== ==============================

The *preprocessing record* (:func:`make_record`) says how a raw scan read with nibabel becomes
what the network was trained on; it is saved in the checkpoint and applied by ``morse
predict`` (:func:`raw_to_network`)::

    {"version": 1, "in_channels": C,
     "axis_order": [1, 0, 2],                # training axes = nibabel axes permuted so
     "file_intensity": step,                 # what made the dataset files from raw scans
     "intensity": [step, ...],               # per channel, what training did to the files
     "geometry": {...}}                      # optional: orientation and spacing the network
                                             # was trained at (morse.data.geometry)

Example:
    >>> import numpy as np
    >>> normalize_intensity(np.array([[-1000.0, -125.0, 75.0, 3000.0]]), "ct").tolist()
    [[0.0, 0.0, 0.5, 1.0]]
    >>> normalize_intensity(np.array([[0.0, 1.0, 3.0]]), "zscore").tolist()
    [[0.0, -1.0, 1.0]]
    >>> step = {"scheme": "ct-percentile", "lower": -100, "upper": 200, "mean": 50, "std": 100}
    >>> apply_intensity(np.array([[-1000.0, 0.0, 150.0, 900.0]]), [step]).tolist()
    [[-1.5, -0.5, 1.0, 1.5]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np

from morse.config import choices
from morse.errors import DataError

from .volume import Volume

__all__ = [
    "INTENSITY_SCHEMES",
    "CT_WINDOW",
    "RECORD_VERSION",
    "no_meta",
    "normalize_intensity",
    "apply_intensity",
    "normalize_volume",
    "resolve_intensity",
    "foreground_stats",
    "make_record",
    "check_record",
    "raw_to_network",
]

INTENSITY_SCHEMES = choices.INTENSITY_SCHEMES.names  # data.normalize, declared by the config
CT_WINDOW = (-125.0, 275.0)
RECORD_VERSION = 1
_STEP_SCHEMES = ("none", "zscore", "ct", "ct-percentile", "minmax")
_MAX_SAMPLES_PER_CASE = 10_000  # as nnU-Net: dataset statistics from a sample per case


@contextmanager
def no_meta() -> Iterator[None]:
    """Run MONAI transforms on plain tensors: no MetaTensor bookkeeping, which is slow."""
    from monai.data import get_track_meta, set_track_meta

    previous = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(previous)


def _step(scheme: str) -> dict[str, Any]:
    """The step of a per-volume scheme name (those needing no dataset statistics)."""
    if scheme == "ct":
        return {"scheme": "ct", "clip": list(CT_WINDOW), "scale": [0.0, 1.0]}
    if scheme in ("zscore", "minmax", "none"):
        return {"scheme": scheme}
    raise ValueError(
        f"unknown intensity scheme {scheme!r}; use one of zscore, ct, minmax, none "
        "(auto and ct-percentile need dataset statistics: see resolve_intensity)"
    )


def _transform(step: Mapping[str, Any]) -> Callable[[Any], Any]:
    """The MONAI transform of one step, for a (1, *spatial) channel."""
    from monai.transforms import NormalizeIntensity, ScaleIntensity, ScaleIntensityRange

    scheme = step.get("scheme")
    if scheme == "none":
        return lambda x: x
    if scheme == "ct":
        (low, high), (b_min, b_max) = step["clip"], step["scale"]
        return ScaleIntensityRange(low, high, b_min, b_max, clip=True)
    if scheme == "ct-percentile":
        low, high, mean, std = (float(step[k]) for k in ("lower", "upper", "mean", "std"))
        return ScaleIntensityRange(low, high, (low - mean) / std, (high - mean) / std, clip=True)
    if scheme == "zscore":
        return NormalizeIntensity(subtrahend=step.get("mean"), divisor=step.get("std"),
                                  nonzero=True)
    if scheme == "minmax":
        return ScaleIntensity(minv=0.0, maxv=1.0)
    raise DataError(f"intensity step {dict(step)!r} has an unknown scheme; use {_STEP_SCHEMES}")


def apply_intensity(image: np.ndarray, steps: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Normalise an image (C, *spatial) channel by channel; returns a new float32 array.

    Args:
        image: (C, *spatial).
        steps: C steps, or one step for every channel (see the module docstring).
    """
    image = np.asarray(image, dtype=np.float32)
    if len(steps) not in (1, image.shape[0]):
        raise DataError(
            f"{len(steps)} intensity steps for an image of {image.shape[0]} channels; "
            "give one step per channel"
        )
    out = np.empty_like(image)
    with no_meta():
        for c in range(image.shape[0]):
            step = steps[c if len(steps) > 1 else 0]
            # MONAI normalises numpy inputs in place: hand it a copy
            out[c] = np.asarray(_transform(step)(image[c : c + 1].copy()), dtype=np.float32)[0]
    return out


def normalize_intensity(image: np.ndarray, scheme: str) -> np.ndarray:
    """Normalise every channel of ``image`` (C, *spatial) with a per-volume scheme
    (``zscore``, ``ct``, ``minmax`` or ``none``); returns a new float32 array."""
    return apply_intensity(image, [_step(scheme)])


def normalize_volume(volume: Volume, steps: str | Sequence[Mapping[str, Any]]) -> Volume:
    """A Volume with its image normalised (a scheme name or steps); every other field kept."""
    if isinstance(steps, str):
        steps = [_step(steps)]
    if all(step.get("scheme") == "none" for step in steps):
        return volume
    return replace(volume, image=apply_intensity(volume.image, steps))


def foreground_stats(volumes: Sequence[Volume], channel: int, nonzero: bool = False) -> dict:
    """Mean, std and 0.5 / 99.5 percentiles of one channel over the dataset's foreground.

    Foreground: labelled voxels (label > 0), or nonzero voxels when ``nonzero``. At most
    10,000 evenly spaced voxels per case are used, as nnU-Net does.

    Returns:
        ``{"mean", "std", "lower", "upper"}`` as floats.
    """
    samples = []
    for volume in volumes:
        values = volume.image[channel]
        mask = values != 0 if nonzero else volume.label > 0
        picked = values[mask]
        samples.append(picked[:: max(1, picked.size // _MAX_SAMPLES_PER_CASE)])
    values = np.concatenate(samples) if samples else np.zeros(0, np.float32)
    if values.size == 0:
        what = "nonzero" if nonzero else "labelled (label > 0)"
        raise DataError(
            f"{volumes[0].source if volumes else 'training subset'}: no {what} voxel in channel "
            f"{channel} of the training cases to compute intensity statistics from; check the "
            "labels or set data.normalize=zscore"
        )
    lower, upper = np.percentile(values, [0.5, 99.5])
    return {"mean": float(values.mean()), "std": max(float(values.std()), 1e-8),
            "lower": float(lower), "upper": float(upper)}


def resolve_intensity(
    scheme: str, channel_names: Sequence[str], train: Callable[[], Sequence[Volume]]
) -> list[dict]:
    """Per channel steps for a ``data.normalize`` setting.

    Args:
        scheme: ``auto`` (CT channels -> ``ct-percentile``, others -> ``zscore``),
            ``ct-percentile``, or a per-volume scheme (``zscore``, ``ct``, ``minmax``, ``none``).
        channel_names: C names (nnU-Net ``channel_names`` / Decathlon ``modality``).
        train: the raw training volumes (called only when dataset statistics are needed).

    Returns:
        C steps.
    """
    if scheme not in INTENSITY_SCHEMES:
        raise DataError(f"data.normalize {scheme!r} is unknown; use one of {INTENSITY_SCHEMES}")
    steps = []
    for c, name in enumerate(channel_names):
        chosen = scheme
        if scheme == "auto":
            chosen = "ct-percentile" if name.strip().upper() == "CT" else "zscore"
        if chosen == "ct-percentile":
            steps.append({"scheme": "ct-percentile", **foreground_stats(train(), c)})
        else:
            steps.append(_step(chosen))
    return steps


def make_record(
    intensity: Sequence[Mapping[str, Any]],
    file_intensity: Mapping[str, Any] | None = None,
    axis_order: Sequence[int] = (0, 1, 2),
) -> dict:
    """The preprocessing record (plain data) of a run; see the module docstring.

    Args:
        intensity: per channel, the step training applied to the dataset's files.
        file_intensity: the step that made the files from raw scans (None: files are raw).
        axis_order: the permutation taking nibabel's axes of a raw scan to the files' axes.
    """
    return {
        "version": RECORD_VERSION,
        "in_channels": len(intensity),
        "axis_order": [int(a) for a in axis_order],
        "file_intensity": dict(file_intensity or {"scheme": "none"}),
        "intensity": [dict(step) for step in intensity],
    }


def check_record(record: Any, source: str) -> dict:
    """``record`` when it is a preprocessing record this code can apply; DataError otherwise."""
    fix = "retrain with this version of MORSE, which saves how raw scans are normalised"
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise DataError(
            f"{source}: no preprocessing record (how raw scans become the network's input) "
            f"saved with the model; {fix}"
        )
    geometry = record.get("geometry")
    if geometry is not None and not _valid_geometry(geometry):
        raise DataError(f"{source}: preprocessing record has geometry {geometry!r}, which this "
                        f"MORSE cannot apply; {fix}")
    steps = [record["file_intensity"], *record["intensity"]]
    unknown = [s for s in steps if s.get("scheme") not in _STEP_SCHEMES]
    if unknown:
        raise DataError(
            f"{source}: preprocessing record has intensity step {unknown[0]!r}, which this "
            f"MORSE cannot apply (known: {_STEP_SCHEMES}); {fix}"
        )
    return record


def _valid_geometry(geometry: Any) -> bool:
    """A geometry record (:mod:`morse.data.geometry`) this code can apply."""
    return (isinstance(geometry, dict) and geometry.get("orientation") == "RAS"
            and isinstance(geometry.get("spacing"), list) and len(geometry["spacing"]) == 3
            and all(isinstance(v, int | float) and v > 0 for v in geometry["spacing"])
            and geometry.get("slice_axis") in (None, 0, 1, 2))


def raw_to_network(image: np.ndarray, record: Mapping[str, Any]) -> np.ndarray:
    """A raw scan (C, *spatial), nibabel order, as the network saw its training data.

    Applies the record's ``axis_order`` to the spatial axes, then ``file_intensity`` and the
    per channel ``intensity`` steps. Returns a float32 array (C, *permuted spatial).
    """
    order = list(record["axis_order"])
    image = np.transpose(image, [0, *(1 + a for a in order)])
    image = apply_intensity(image, [record["file_intensity"]])
    return apply_intensity(image, record["intensity"])
