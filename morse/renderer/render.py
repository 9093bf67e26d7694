"""Subdivision rendering at inference: re-predict the least certain cells, step by step."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from morse.renderer.points import (
    GridMap,
    grid_centres,
    margin_uncertainty,
    most_uncertain_cells,
    sample_at,
    sampling_grid,
    scatter_to_grid,
)
from morse.shapes import size_max, size_min

__all__ = ["plan_render_sizes", "step_points", "subdivision_render", "onto_grid"]

PointResult = torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]
PointFn = Callable[[torch.Tensor, torch.Tensor | None], PointResult]


def plan_render_sizes(
    coarse_size: Sequence[int],
    steps: int,
    upsample: bool = False,
    output_size: Sequence[int] | None = None,
) -> list[tuple[int, ...]]:
    """The grid size each rendering step works at.

    Without ``output_size`` the output is the coarse size, or ``2**steps`` times it when
    ``upsample``. With ``upsample`` each step doubles the grid (PointRend), never beyond the
    output size, and the last step always lands on the output size; without it every step
    works directly at the output size.

    >>> plan_render_sizes((8, 8), steps=2, upsample=True)
    [(16, 16), (32, 32)]
    >>> plan_render_sizes((8, 8), steps=2, output_size=(20, 12))
    [(20, 12), (20, 12)]
    """
    # torch.sym_int: sizes stay symbolic under torch.export (int() would fix them)
    coarse_size = tuple(torch.sym_int(s) for s in coarse_size)
    if output_size is None:
        factor = 2**steps if upsample else 1
        output_size = tuple(s * factor for s in coarse_size)
    output_size = tuple(torch.sym_int(s) for s in output_size)
    if len(output_size) != len(coarse_size):
        raise ValueError(
            f"output_size {output_size} has {len(output_size)} axes; the prediction has "
            f"{len(coarse_size)} ({coarse_size})"
        )
    sizes = []
    for step in range(steps):
        if upsample and step < steps - 1:
            size = tuple(size_min(c * 2 ** (step + 1), o)
                         for c, o in zip(coarse_size, output_size))
        else:
            size = output_size
        sizes.append(size)
    return sizes


def _resize(maps: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    if mode == "nearest":
        # "nearest-exact" reads the source cell under each output cell's centre; legacy
        # "nearest" is off by one cell on non-integer ratios.
        return F.interpolate(maps, size=tuple(size), mode="nearest-exact")
    mode = "bilinear" if maps.dim() == 4 else "trilinear"
    return F.interpolate(maps, size=tuple(size), mode=mode, align_corners=False)


def onto_grid(maps: torch.Tensor, size: Sequence[int], grid_map: GridMap) -> torch.Tensor:
    """Linearly read maps (B, C, *S) at the centres of an output grid placed by ``grid_map``.

    Returns:
        (B, C, *size), fp32 (or wider). With the identity map this is ``F.interpolate``
        (``align_corners=False``) inside the map; outside it the border value is kept.
    """
    centres = grid_centres(size, grid_map, maps.device)
    grid = sampling_grid(centres.reshape(1, -1, len(size)).expand(maps.shape[0], -1, -1))
    return sample_at(maps, grid).view(*maps.shape[:2], *size)


def _split(result: PointResult) -> tuple[torch.Tensor, torch.Tensor | None]:
    return result if isinstance(result, tuple) else (result, None)


def step_points(num_points: int, size: Sequence[int], max_share: float | None = None) -> int:
    """N for one step on a grid of ``size``: ``num_points``, at most ``max_share`` of its cells.

    >>> step_points(8192, (256, 256), 0.125), step_points(8192, (84, 206), 0.125)
    (8192, 2163)
    """
    if max_share is None:
        return num_points
    # sym_*: a function of symbolic sizes under torch.export, not a branch fixed at one size
    return size_min(num_points, size_max(1, torch.sym_int(max_share * math.prod(size))))


def subdivision_render(
    coarse: torch.Tensor,
    point_fn: PointFn | None,
    num_points: int,
    steps: int = 2,
    upsample: bool = False,
    output_size: Sequence[int] | None = None,
    max_margin: float | None = None,
    max_share: float | None = None,
    grid_map: GridMap | None = None,
    static_shapes: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Render the uncertain cells of a coarse prediction with a point function.

    Each step resizes the current logits to its planned grid (linear interpolation), picks
    the ``num_points`` most uncertain cells, asks ``point_fn`` for logits at their centres and
    writes them back. Cells rendered in an earlier step at the same grid size are not picked
    again, so no cell is rendered twice in one pass (a step with no cell left renders none).
    Cells never picked keep the interpolated coarse logits exactly.

    Adaptive budget: with ``max_margin``, a cell whose top-2 logit margin (largest minus
    second largest) is at least ``max_margin`` is certain and is never rendered, so a step
    renders the uncertain cells only, up to N. With ``max_share``, N is at most that share of
    the step's grid cells (``step_points``).

    Steps and ranking: on one grid (no ``upsample``) the rendered cells are left out of the
    next ranking and no other cell changes, so the rendered values never re-rank anything:
    two steps of N points render exactly the cells (and values) of one step of 2N, the N
    next cells of the same ranking. So consecutive steps on one grid run as one round of
    k N cells (one margin map, one top-k, one call of ``point_fn``). When the grid changes
    between steps (``upsample``), the rendered values are interpolated onto the new grid and
    do shape the next ranking.

    The logits are kept in fp32 (or wider) and cell centres are fp32 whatever the autocast
    setting, so under bf16 autocast the cells picked from given logits and their centres are
    those of fp32.

    Args:
        coarse: (B, K, *S) coarse logits.
        point_fn: ``point_fn(coords, active)`` maps (B, N, D) coordinates in [0, 1] to
            (B, K, N) logits, or to a pair of those logits and per-point gate weights
            (B, S, N) (or None); None only when ``steps`` is 0. ``active`` (B, N) bool is
            False on the rows that only fill the batch (with ``max_margin``, images have
            different numbers of uncertain cells) and whose values are discarded, so it may
            skip them; it is None when every row counts, and always with ``static_shapes``.
        num_points: N cells per step.
        steps: number of rounds; 0 returns the (resized) coarse logits.
        upsample: double the grid at each step (see ``plan_render_sizes``).
        output_size: the grid to render on (e.g. the scan's own), default see above.
        max_margin: None renders N cells per step whatever their margin (the paper).
        max_share: None lets N be any share of the grid.
        grid_map: where the ``output_size`` grid lies over the coarse map (e.g. a scan's
            own voxels inside the network's resampled input); the coarse logits are read at
            its cells' centres and ``point_fn`` gets the mapped coordinates. None: the output
            grid covers the coarse map exactly. Needs ``output_size``; no ``upsample``.
        static_shapes: every step asks for exactly N cells (``step_points``, at most the
            grid's cells), never fewer because fewer are left: rows beyond the cells left are
            filled with skipped cells and keep their values, as with ``max_margin``. No shape
            then depends on the logits' values (for tracing and export), and ``point_fn``
            gets every row; the cells rendered and their values are the same.

    Returns:
        logits (B, K, *S_out); a bool map (B, 1, *S_out) of the cells that were rendered (a
        cell of a coarser step marks every output cell whose centre it holds); the gate map
        (B, S, *S_out) fp32 of the rendered cells' gate weights (the last write wins, 0 where
        no cell was rendered), or None when ``point_fn`` gives no gate.
    """
    logits = coarse.to(torch.promote_types(coarse.dtype, torch.float32))
    if grid_map is not None:
        if output_size is None or upsample:
            raise ValueError("grid_map places an output grid: give output_size, no upsample")
        logits = onto_grid(logits, output_size, grid_map)
    if logits is coarse:  # written in place below: never the caller's tensor
        logits = logits.clone(memory_format=torch.contiguous_format)
    logits = logits.contiguous()
    rendered = torch.zeros_like(logits[:, :1], dtype=torch.bool)
    gate = exclude = None
    for size, cells in _merged_steps(
            plan_render_sizes(coarse.shape[2:], steps, upsample, output_size),
            num_points, max_share):
        if tuple(logits.shape[2:]) != size:
            logits, rendered, gate = _resize_all(logits, rendered, gate, size)
            exclude = None
        uncertainty = margin_uncertainty(logits).flatten(1)  # (B, prod(S)), once a step
        skip = _or(exclude, _certain(uncertainty, max_margin))
        indices, coords = most_uncertain_cells(
            logits, cells, skip, fill=True, clip=not static_shapes, uncertainty=uncertainty)
        if indices.shape[1] == 0:
            continue
        # with the margin, images of a batch have different numbers of uncertain cells: the
        # rows are filled with skipped cells, which keep their values
        keep = None if skip is None else skip.gather(1, indices)
        if keep is not None and not static_shapes and not keep.any():
            keep = None  # every row counts: no masking, no gathers (a branch on values)
        active = None if keep is None or static_shapes else ~keep
        if grid_map is not None:
            coords = grid_map.apply(coords)
        values, point_gate = _split(point_fn(coords, active))
        # the grids are this function's own (copies, resized or zeros): written in place
        scatter_to_grid(logits, indices, _unless(keep, values, logits, indices), inplace=True)
        if point_gate is not None:
            if gate is None:
                gate = logits.new_zeros(logits.shape[0], point_gate.shape[1], *size)
            scatter_to_grid(gate, indices, _unless(keep, point_gate, gate, indices), inplace=True)
        picked = torch.zeros_like(rendered.flatten(1)).scatter_(
            1, indices, True if keep is None else ~keep)
        exclude = picked if exclude is None else exclude | picked
        rendered = rendered | picked.view_as(rendered)
    if output_size is not None and tuple(logits.shape[2:]) != tuple(output_size):
        logits, rendered, gate = _resize_all(logits, rendered, gate, output_size)
    return logits, rendered, gate


def _merged_steps(
    sizes: Sequence[tuple[int, ...]], num_points: int, max_share: float | None
) -> list[tuple[tuple[int, ...], int]]:
    """(grid size, cells to pick) per round: consecutive steps on the same grid become one.

    On one grid, rendered cells leave the ranking and no other cell changes, so k steps of N
    cells render exactly the k N first cells of the first step's ranking: one selection (one
    margin map, one top-k) does them all.

    >>> _merged_steps([(16, 16), (32, 32), (32, 32)], 100, 0.125)
    [((16, 16), 32), ((32, 32), 200)]
    """
    rounds: list[tuple[tuple[int, ...], int]] = []
    for size in sizes:
        cells = step_points(num_points, size, max_share)
        if rounds and rounds[-1][0] == size:
            rounds[-1] = (size, rounds[-1][1] + cells)
        else:
            rounds.append((size, cells))
    return rounds


def _certain(uncertainty: torch.Tensor, max_margin: float | None) -> torch.Tensor | None:
    """(B, prod(S)) bool from the (B, prod(S)) ``margin_uncertainty``: top-2 margin at least
    ``max_margin``; None without a margin."""
    if max_margin is None:
        return None
    return uncertainty <= -max_margin


def _or(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else a | b


def _unless(
    keep: torch.Tensor | None, values: torch.Tensor, grid: torch.Tensor, indices: torch.Tensor
) -> torch.Tensor:
    """``values`` (B, C, N), with the grid's own values where ``keep`` (B, N) is True."""
    if keep is None:
        return values
    current = grid.flatten(2).gather(2, indices.unsqueeze(1).expand(-1, grid.shape[1], -1))
    return torch.where(keep.unsqueeze(1), current, values.to(current.dtype))


def _resize_all(
    logits: torch.Tensor, rendered: torch.Tensor, gate: torch.Tensor | None, size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits linearly, the rendered map and the gate map by nearest cell."""
    logits = _resize(logits, size, "linear")
    rendered = _resize(rendered.to(torch.uint8), size, "nearest").bool()
    return logits, rendered, None if gate is None else _resize(gate, size, "nearest")
