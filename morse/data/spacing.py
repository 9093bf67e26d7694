"""User-given voxel spacing for formats whose files carry none (Synapse, ACDC).

``data.spacing: [sx, sy, sz]`` gives one voxel size for every case; ``data.spacing_file``
a JSON file ``{"case0001": [0.76, 0.76, 3.0], ...}`` gives one per case. Sizes are per axis
of the loaded arrays (rows, columns, slices), in mm.

Example:
    >>> lookup = spacing_lookup([0.8, 0.8, 5.0], None)
    >>> lookup("case0005")
    (0.8, 0.8, 5.0)
    >>> spacing_lookup(None, None)("case0005") is None
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from morse.errors import DataError

from .validate import read_json
from .volume import Volume

__all__ = ["SpacingOf", "load_each", "spacing_lookup", "spacing_of", "read_spacing_file"]

SpacingOf = Callable[[str], "tuple[float, ...] | None"]
"""Case id -> voxel size (mm per axis), or None when unknown."""


def _checked(value: object, where: str) -> tuple[float, ...]:
    ok = isinstance(value, list | tuple) and len(value) == 3 and all(
        isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value
    )
    if not ok:
        raise DataError(
            f"{where} is {value!r}; give three positive sizes in mm, e.g. [0.8, 0.8, 3.0]"
        )
    return tuple(float(v) for v in value)  # type: ignore[union-attr]


def read_spacing_file(path: str | Path) -> dict[str, tuple[float, ...]]:
    """``{case id: (s0, s1, s2)}`` from a JSON spacing file (DataError naming the entry)."""
    path = Path(path)
    data = read_json(path, "spacing file not found; fix data.spacing_file")
    if not isinstance(data, dict):
        raise DataError(f'{path}: expected {{"case0001": [0.76, 0.76, 3.0], ...}}')
    return {str(case): _checked(value, f'{path}: "{case}"') for case, value in data.items()}


def spacing_of(spacing: Sequence[float] | SpacingOf | None, name: str) -> Sequence[float] | None:
    """The spacing of file ``name``: ``spacing`` itself, or what the lookup gives for it."""
    return spacing(name) if callable(spacing) else spacing


def load_each(
    load: Callable[[Path, Sequence[float] | None], Volume],
    folder: Path,
    suffix: str,
    names: Sequence[str],
    spacing: Sequence[float] | SpacingOf | None,
) -> list[Volume]:
    """``load(folder / (name + suffix), spacing of name)`` for every name, in order."""
    return [load(folder / f"{name}{suffix}", spacing_of(spacing, name)) for name in names]


def spacing_lookup(
    spacing: Sequence[float] | None,
    spacing_file: str | Path | None,
    case_of: Callable[[str], str] = str,
) -> SpacingOf:
    """A case id -> spacing function from ``data.spacing`` or ``data.spacing_file``.

    Args:
        spacing: one voxel size for every case, or None.
        spacing_file: JSON file of per case sizes, or None.
        case_of: maps a file's id to its case (e.g. a slice name to its volume).

    Returns:
        A function giving the spacing of a file id, or None when neither source is given;
        a case missing from the spacing file raises DataError naming it.
    """
    if spacing is not None and spacing_file is not None:
        raise DataError("data.spacing and data.spacing_file are both set; keep one of them")
    if spacing is not None:
        fixed = _checked(list(spacing), "data.spacing")
        return lambda name: fixed
    if spacing_file is None:
        return lambda name: None
    table = read_spacing_file(spacing_file)

    def lookup(name: str) -> tuple[float, ...]:
        case = case_of(name)
        if case not in table:
            raise DataError(
                f'{spacing_file}: no entry for case {case}; add "{case}": [s0, s1, s2] (mm)'
            )
        return table[case]

    return lookup
