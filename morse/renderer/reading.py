"""Reading a backbone's maps at points: prepared once per pass, read by table or by sampling.

``prepare_inputs`` runs each expert's first layer on the maps where that is cheaper than on
the points (a linear layer commutes with linear interpolation) and turns the maps that pay
for it into cell tables; ``point_rows`` reads every map at the points, as rows (..., c).
Shapes: B images, S feature scales, P points per image, M active points, D spatial dims.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from morse.renderer.points import (
    GridMap,
    cell_indices,
    cell_table,
    corner_weights,
    sample_at,
    sample_rows,
    sample_table,
    sampling_grid,
)

__all__ = ["TABLE_CELLS_PER_POINT", "PointInputs", "RenderGrid", "prepare_inputs", "enter_map",
           "point_rows"]

TABLE_CELLS_PER_POINT = {2: 1, 3: 8}
"""A map is read through a cell table when it has at most this many cells per point read
(per image); the copy into the table costs a pass over the map. CPU ``grid_sample`` is
vectorised in 2D but not in 3D, where a table pays for a map of up to 8 cells per point
(the fastest of the thresholds timed; see docs/explanation/performance.md)."""


class RenderGrid(NamedTuple):
    """The grid a rendering pass puts its points at the cell centres of."""

    size: tuple[int, ...]
    grid_map: GridMap | None
    """Where it lies over the coarse map; None: it is the coarse map's own grid."""


class PointInputs(NamedTuple):
    """What the point function reads, prepared once per pass (``MorseRenderer.prepare``)."""

    maps: list[torch.Tensor]
    """S maps (B, c_s, *S_s), or (B, width, *S_s) where ``entered``."""
    entered: list[bool]
    """Per scale: the map already went through its expert's first layer."""
    coarse: torch.Tensor
    """(B, K, *S) the coarse logits."""
    tables: list[torch.Tensor | None]
    """Per map: its ``cell_table`` (B * cells, c) to read points from, or None (read the map
    with ``grid_sample``)."""


def prepare_inputs(
    entries: Sequence[nn.Linear],
    features: Sequence[torch.Tensor],
    coarse: torch.Tensor,
    num_points: int,
    tables: bool = True,
    table_dtype: torch.dtype | None = None,
) -> PointInputs:
    """The maps to read, with first layers entered and cell tables made where they pay.

    A map is entered (its expert's first layer run on every cell) when it has fewer cells
    than ``num_points`` and at least as many channels as the layer's output. It is read
    through a ``cell_table`` (one fused gather per point, ``sample_table``) when it is
    entered (channels-last already) or has at most ``TABLE_CELLS_PER_POINT`` cells per point;
    else by ``grid_sample``. Both are exact up to float rounding, gradients included.

    Args:
        entries: each scale's first expert layer (none for the experts-off ablation).
        features: S maps (B, c_s, *S_s).
        coarse: (B, K, *S) the coarse logits (always read by ``grid_sample``).
        num_points: points per image that will be read (all steps and chunks together).
        tables: False reads every map with ``grid_sample`` and enters none: no choice then
            depends on the maps' sizes (for export at any size).
        table_dtype: the tables' dtype (default fp32; bf16 for bf16 point MLPs at inference).
    """
    maps, entered = [], []
    for index, feature_map in enumerate(features):
        enter = (tables and index < len(entries)
                 and math.prod(feature_map.shape[2:]) < num_points
                 and feature_map.shape[1] >= entries[index].out_features)
        maps.append(enter_map(entries[index], feature_map) if enter else feature_map)
        entered.append(enter)
    most = num_points * TABLE_CELLS_PER_POINT[coarse.dim() - 2]
    cells_last = [tables and (enter or math.prod(m.shape[2:]) <= most)
                  for m, enter in zip(maps, entered)]
    return PointInputs(maps, entered, coarse,
                       [cell_table(m, table_dtype) if last else None
                        for m, last in zip(maps, cells_last)])


def enter_map(entry: nn.Linear, maps: torch.Tensor) -> torch.Tensor:
    """A point layer on every cell of a map: (B, c, *S) -> (B, c_out, *S) (channels-last)."""
    return F.linear(maps.movedim(1, -1), entry.weight, entry.bias).movedim(-1, 1)


def point_rows(
    inputs: PointInputs, coords: torch.Tensor, active: torch.Tensor | None,
    grid: RenderGrid | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every prepared map read at the points, the coarse logits last, as rows (B', P', c).

    Args:
        coords: (B, P, D) in [0, 1].
        active: (B, P) bool, the rows to read (None: all).
        grid: the render grid whose cell centres the points are (None: any points). A map
            on that very grid (no ``GridMap``: e.g. a window's coarse logits) is read by cell
            index: a centre's interpolation weight is all on its own cell.

    Returns:
        S + 1 row blocks (B', P', c): without ``active``, the P points of each of the B
        images; with it, B' = 1 and P' = M, the active rows in ``coords[active]`` order.
        Grid-sampled blocks are transposed views, which ``F.linear`` reads as they are. And
        the points read, (B', P', D): ``coords`` itself without ``active``.
    """
    batch, count, spatial_dims = coords.shape
    if active is None:
        points = coords
        flat = coords.reshape(-1, spatial_dims)
        images = torch.arange(batch, device=coords.device).repeat_interleave(count)
        by_grid = functools.partial(sample_rows, grid=sampling_grid(coords))
    else:
        flat, images = coords[active], active.nonzero()[:, 0]
        points = flat[None]
        counts = active.sum(1).tolist()

        def by_grid(maps: torch.Tensor) -> torch.Tensor:
            return _sample_image_by_image(maps, flat, counts)[None]

    on_grid = grid is not None and grid.grid_map is None
    cells = cell_indices(flat, grid.size) if on_grid else None
    rows = []
    for maps, table in zip([*inputs.maps, inputs.coarse], [*inputs.tables, None]):
        if on_grid and tuple(maps.shape[2:]) == tuple(grid.size):
            rows.append(_cell_rows(maps, table, images, cells).view(*points.shape[:2], -1))
        elif table is None:
            rows.append(by_grid(maps))
        else:
            corners = corner_weights(flat, images, maps.shape[2:])
            rows.append(sample_table(table, *corners).view(*points.shape[:2], table.shape[1]))
    return rows, points


def _cell_rows(maps: torch.Tensor, table: torch.Tensor | None, images: torch.Tensor,
               cells: torch.Tensor) -> torch.Tensor:
    """Map (B, c, *S) values at (M,) cells of (M,) images: (M, c), fp32 (or wider) as
    sampling gives, or the table's dtype when read from its ``cell_table``."""
    if table is not None:
        return table.index_select(0, images * math.prod(maps.shape[2:]) + cells)
    values = maps.flatten(2)[images, :, cells]
    return values.to(torch.promote_types(values.dtype, torch.float32))


def _sample_image_by_image(
    maps: torch.Tensor, points: torch.Tensor, counts: Sequence[int]
) -> torch.Tensor:
    """Read maps (B, c, *S) at (M, D) points, ``counts[b]`` of them in image b, in order:
    (M, c), a transposed view (zeros (0, c) when M is 0)."""
    parts = [sample_at(maps[index : index + 1], sampling_grid(part[None]))[0]
             for index, part in enumerate(points.split(list(counts))) if part.shape[0]]
    if not parts:  # a chunk of fill rows only
        return maps.new_zeros(0, maps.shape[1], dtype=points.dtype)
    return torch.cat(parts, dim=1).t()
