"""The coordinate code of a render grid, through the head's first layer, once per grid.

At inference the rendered points are cell centres of one grid, and the slices of a volume
share their plane, a volume's sliding windows their window grid. So the Fourier code of a cell
and its product with the head's first layer (the layer's code columns) are the same in every
slice and window: ``PositionTable`` computes them once, cell by cell, and each point reads its
cell's row by index. The arithmetic is that of encoding each point (up to float rounding), less
the per-point sines and cosines and the code's share of the first layer's GEMM. The renderer
keeps the last table while the grid and the weights are unchanged (``cached_table``).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from morse.renderer.encoding import FourierEncoding
from morse.renderer.points import GridMap, grid_centres
from morse.renderer.stamps import Stamp

__all__ = ["TABLE_ELEMENTS", "PositionTable", "cached_table"]

TABLE_ELEMENTS = 2**24
"""The largest table, in cells x head width (64 MiB in fp32); a larger grid (e.g. a 96^3
window at the paper's width) encodes point by point."""

_TABLES: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()
"""Each renderer's last table with its key and stamp (outside the module: never saved,
copied or pickled with it)."""


@dataclass(frozen=True)
class PositionTable:
    """``values`` (cells, hidden) fp32: each cell's code times the first layer's code columns,
    for the grid of ``size`` placed by ``grid_map`` (None: covering the coarse map)."""

    size: tuple[int, ...]
    grid_map: GridMap | None
    values: torch.Tensor

    @classmethod
    def build(cls, encoding: FourierEncoding, layer: nn.Linear, size: Sequence[int],
              grid_map: GridMap | None) -> PositionTable:
        """The table of ``encoding`` through ``layer``'s first ``encoding.out_channels``
        columns (no bias: the layer adds it)."""
        size = tuple(int(n) for n in size)
        device = layer.weight.device
        placed = grid_map or GridMap((1.0,) * len(size), (0.0,) * len(size))
        centres = grid_centres(size, placed, device).reshape(1, -1, len(size))
        code = encoding(centres)[0]  # (cells, 2F) fp32
        columns = layer.weight.detach()[:, : encoding.out_channels].float()
        with torch.autocast(device.type, enabled=False):
            return cls(size, grid_map, code @ columns.t())

    def rows(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., D) cell centres of the grid, as the point function gets them (mapped by
        ``grid_map``) -> (..., hidden) their rows."""
        if self.grid_map is not None:  # back to the output grid's own [0, 1]^D
            scale = coords.new_tensor(self.grid_map.scale)
            offset = coords.new_tensor(self.grid_map.offset)
            coords = (coords - offset) / scale
        sizes = coords.new_tensor(self.size)
        # a centre lies half a cell from the cell's sides: floor is safe from rounding
        cells = (coords * sizes).floor_().long()
        cells = torch.minimum(cells.clamp_(min=0), torch.tensor(self.size, device=cells.device) - 1)
        strides = torch.tensor([math.prod(self.size[axis + 1:]) for axis in range(len(self.size))],
                               device=cells.device)
        flat = (cells * strides).sum(-1)
        return self.values.index_select(0, flat.reshape(-1)).view(*coords.shape[:-1], -1)


def cached_table(owner: nn.Module, encoding: FourierEncoding, layer: nn.Linear,
                 size: Sequence[int], grid_map: GridMap | None) -> PositionTable | None:
    """``owner``'s table for this grid: the last one while the grid, the encoding and the
    layer are unchanged, else a new one; None when the grid is too large for a table."""
    size = tuple(int(n) for n in size)
    if math.prod(size) * layer.out_features > TABLE_ELEMENTS:
        return None
    key = (size, grid_map, layer.weight.device)
    kept = _TABLES.get(owner)
    if kept is not None and kept[0] == key and kept[1].matches(encoding.matrix, layer.weight):
        return kept[2]
    table = PositionTable.build(encoding, layer, size, grid_map)
    _TABLES[owner] = (key, Stamp.of(encoding.matrix, layer.weight), table)
    return table
