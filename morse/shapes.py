"""Padded sizes, shared by data preparation, the backbones' input checks and inference.

2D slices without a training size (``data.slice_size``) are padded at their far ends to a
multiple of ``PAD_MULTIPLE``: every backbone's largest stride divides it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["PAD_MULTIPLE", "padded_size", "per_axis"]

PAD_MULTIPLE = 32


def padded_size(spatial: Sequence[int], multiple: int | Sequence[int]) -> tuple[int, ...]:
    """Smallest size ``>= spatial`` whose every entry is a multiple of ``multiple``.

    >>> padded_size((30, 32, 1), 16)
    (32, 32, 16)
    >>> padded_size((30, 33), (2, 4))
    (30, 36)
    """
    mult = per_axis(multiple, len(spatial))
    return tuple(-(-int(s) // m) * m for s, m in zip(spatial, mult))


def per_axis(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"expected {n} per-axis values, got {value}")
    return value
