"""The coordinate code of a render grid, through the head's first layer, once per grid.

At inference the rendered points are cell centres of one grid, and the slices of a volume
share their plane, a volume's sliding windows their window grid. So the Fourier code of a cell
and its product with the head's first layer (the layer's code columns) are the same in every
slice and window: ``PositionTable`` computes them once, cell by cell, and each point reads its
cell's row by index. The arithmetic is that of encoding each point (up to float rounding), less
the per-point sines and cosines and the code's share of the first layer's GEMM. The renderer
builds a table where it pays and keeps the last one while the grid and the weights are unchanged
(``cached_table``).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from morse.renderer.encoding import FourierEncoding
from morse.renderer.points import GridMap, cell_indices, grid_centres
from morse.renderer.stamps import Stamp

__all__ = ["TABLE_ELEMENTS", "PointCode", "PositionTable", "cached_table"]

TABLE_ELEMENTS = 2**24
"""The largest table, in cells x head width (64 MiB in fp32); a larger grid (e.g. a 96^3
window at the paper's width) encodes point by point."""

_TABLES: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()
"""Each renderer's last table with its key and stamp (outside the module: never saved,
copied or pickled with it)."""


@dataclass(frozen=True)
class PointCode:
    """The code of any points through the head's first layer's code columns, point by point:
    what a ``PositionTable`` holds per cell, with the same arithmetic (fp32, no autocast), so
    a pass gives the same values whether its grid had a table or not."""

    encoding: FourierEncoding
    layer: nn.Linear

    def rows(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., D) points in the coarse map's [0, 1]^D -> (..., hidden) fp32."""
        code = self.encoding(coords)
        columns = self.layer.weight.detach()[:, : code.shape[-1]].float()
        with torch.autocast(coords.device.type, enabled=False):
            return code.float() @ columns.t()


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
        placed = grid_map or GridMap((1.0,) * len(size), (0.0,) * len(size))
        centres = grid_centres(size, placed, layer.weight.device).reshape(1, -1, len(size))
        return cls(size, grid_map, PointCode(encoding, layer).rows(centres)[0])

    def rows(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., D) cell centres of the grid, as the point function gets them (mapped by
        ``grid_map``) -> (..., hidden) their rows."""
        flat = cell_indices(coords, self.size, self.grid_map)
        return self.values.index_select(0, flat.reshape(-1)).view(*coords.shape[:-1], -1)


def cached_table(owner: nn.Module, encoding: FourierEncoding, layer: nn.Linear,
                 size: Sequence[int], grid_map: GridMap | None, points: int
                 ) -> PositionTable | PointCode:
    """``owner``'s table for this grid, or a ``PointCode`` (encode point by point).

    The last table is kept while the grid, the encoding and the layer are unchanged. A new
    grid gets a table when this pass reads at least as many ``points`` as it has cells, or
    when the pass before asked for the same grid (the slices of a volume, its windows on the
    network's grid); a grid that changes every pass (windows placed over a scan's own voxels)
    encodes its points instead, as does a grid larger than ``TABLE_ELEMENTS``.
    """
    size = tuple(int(n) for n in size)
    cells = math.prod(size)
    if cells * layer.out_features > TABLE_ELEMENTS:
        return PointCode(encoding, layer)
    key = (size, grid_map, layer.weight.device)
    kept = _TABLES.get(owner)
    seen = kept is not None and kept[0] == key and kept[1].matches(encoding.matrix, layer.weight)
    if seen and kept[2] is not None:
        return kept[2]
    stamp = Stamp.of(encoding.matrix, layer.weight)
    if not seen and cells > points:
        _TABLES[owner] = (key, stamp, None)  # remembered: built if the next pass asks again
        return PointCode(encoding, layer)
    table = PositionTable.build(encoding, layer, size, grid_map)
    _TABLES[owner] = (key, stamp, table)
    return table
