"""Grid sizes, shared by data preparation, the backbones' input checks, inference and export.

2D slices without a training size (``data.slice_size``) are padded at their far ends to a
multiple of ``PAD_MULTIPLE``: every backbone's largest stride divides it. A grid larger than
``MAX_CELLS`` (a header with a wrong voxel size, a typo in a size) is refused before any
memory is taken, with the memory it would need in the message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from morse.errors import DataError

__all__ = ["MAX_CELLS", "PAD_MULTIPLE", "check_grid_size", "padded_size", "per_axis",
           "size_max", "size_min"]

PAD_MULTIPLE = 32
MAX_CELLS = 1024**3
"""The most cells a grid may have (1024^3, 2x a 512 x 512 x 2048 CT)."""


def check_grid_size(shape: Sequence[int], what: str, bytes_per_cell: int, fix: str) -> None:
    """Refuse a grid with an empty axis or of more than :data:`MAX_CELLS` cells; the message
    gives the memory ``bytes_per_cell`` per cell would take, then ``fix``.

    >>> check_grid_size((512, 512, 300), "scan", 4, "check its voxel size")
    >>> check_grid_size((100000, 100000), "--size", 4, "give it in voxels")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    morse.errors.DataError: --size: a grid of 100000 x 100000 cells ... about 37.3 GiB ...
    """
    size = " x ".join(str(int(n)) for n in shape)
    if min(int(n) for n in shape) < 1:
        raise DataError(f"{what}: a grid of {size} cells has an empty axis; {fix}")
    cells = math.prod(int(n) for n in shape)
    if cells > MAX_CELLS:
        raise DataError(
            f"{what}: a grid of {size} cells ({cells / 1e6:.0f} M) would need about "
            f"{cells * bytes_per_cell / 2**30:.1f} GiB for its maps alone (the limit is "
            f"{MAX_CELLS / 1e6:.0f} M cells); {fix}"
        )


def padded_size(spatial: Sequence[int], multiple: int | Sequence[int]) -> tuple[int, ...]:
    """Smallest size ``>= spatial`` whose every entry is a multiple of ``multiple``.

    >>> padded_size((30, 32, 1), 16)
    (32, 32, 16)
    >>> padded_size((30, 33), (2, 4))
    (30, 36)
    """
    mult = per_axis(multiple, len(spatial))
    # torch.sym_int: a symbolic size under torch.export stays symbolic (int() would fix it);
    # no floor division of a negative number: the ONNX exporter truncates it towards zero
    return tuple((torch.sym_int(s) + m - 1) // m * m for s, m in zip(spatial, mult))


def per_axis(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"expected {n} per-axis values, got {value}")
    return value


def size_min(a, b):
    """``min`` of two sizes that stays symbolic under ``torch.export`` (a plain ``min`` would
    fix the branch taken at the example's size); under a TorchScript trace sizes are tensors
    and the plain ``min`` is traced as before.

    >>> size_min(3, 5), size_max(3, 5)
    (3, 5)
    """
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return min(a, b)
    return torch.sym_min(a, b)


def size_max(a, b):
    """``max`` of two sizes, symbolic under ``torch.export`` (see :func:`size_min`)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return max(a, b)
    return torch.sym_max(a, b)
