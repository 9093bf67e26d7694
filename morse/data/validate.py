"""The checks every reader shares: labels must be integer class values, images finite.

Problems are returned as text without the file name (callers prefix it), so a dataset check
can list every problem and a loader can raise the first one.

>>> label_problem(np.array([0.0, 1.5]))
'has non-integer values; labels must be integer class indices (resample labels with nearest-neighbour interpolation)'
>>> label_problem(np.array([0, 4]), range(4), "outside 0..3", "use the dataset's own files")
"label values [4] are outside 0..3; use the dataset's own files"
>>> image_problem(np.array([[np.nan, 1.0, np.inf]]))
'has 2 NaN or infinite voxels; fix the conversion or replace them'
"""  # noqa: E501

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from morse.errors import DataError

__all__ = ["label_problem", "checked_label", "image_problem", "read_json"]


def label_problem(
    label: np.ndarray,
    allowed: Iterable[int] | None = None,
    where: str = "not class values",
    fix: str = "fix the label map",
) -> str | None:
    """Why ``label`` (*spatial) cannot be used as class indices, or None when it can.

    Args:
        label: a label map of any numeric dtype.
        allowed: the class values allowed (None: any integer).
        where: how to describe values outside ``allowed``, e.g. ``"outside 0..3"``.
        fix: what to do about such values.
    """
    label = np.asarray(label)
    if label.dtype.kind == "f":
        if not np.all(np.isfinite(label)):
            return "has NaN or infinite voxels; labels must be integer class values"
        if np.any(label != np.round(label)):
            return (
                "has non-integer values; labels must be integer class indices "
                "(resample labels with nearest-neighbour interpolation)"
            )
    if allowed is None:
        return None
    unknown = sorted({int(v) for v in np.unique(label)} - {int(v) for v in allowed})
    return f"label values {unknown} are {where}; {fix}" if unknown else None


def checked_label(
    label: np.ndarray,
    path: str | Path,
    allowed: Iterable[int] | None = None,
    where: str = "not class values",
    fix: str = "fix the label map",
) -> np.ndarray:
    """``label`` as int64 (*spatial); DataError ``"{path}: {problem}; {fix}"`` otherwise."""
    problem = label_problem(label, allowed, where, fix)
    if problem:
        raise DataError(f"{path}: {problem}")
    return np.asarray(label).astype(np.int64)


def image_problem(image: np.ndarray) -> str | None:
    """Why an image array cannot be fed to a network (NaN or infinite voxels), or None."""
    image = np.asarray(image)
    if image.dtype.kind != "f":
        return None
    bad = int(np.count_nonzero(~np.isfinite(image)))
    if bad:
        return f"has {bad} NaN or infinite voxels; fix the conversion or replace them"
    return None


def read_json(path: Path, missing: str) -> Any:
    """The content of a JSON file the user wrote; DataError naming the file and the fix.

    Args:
        path: the file.
        missing: what to say when it does not exist, e.g. "split file not found; ...".
    """
    if not path.is_file():
        raise DataError(f"{path}: {missing}")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); fix the syntax") from exc
