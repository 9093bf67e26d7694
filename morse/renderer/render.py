"""Subdivision rendering at inference: re-predict the least certain cells, step by step."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from morse.renderer.points import most_uncertain_cells, scatter_to_grid

__all__ = ["plan_render_sizes", "subdivision_render"]

PointResult = torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]
PointFn = Callable[[torch.Tensor], PointResult]


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
    coarse_size = tuple(int(s) for s in coarse_size)
    if output_size is None:
        factor = 2**steps if upsample else 1
        output_size = tuple(s * factor for s in coarse_size)
    output_size = tuple(int(s) for s in output_size)
    if len(output_size) != len(coarse_size):
        raise ValueError(
            f"output_size {output_size} has {len(output_size)} axes; the prediction has "
            f"{len(coarse_size)} ({coarse_size})"
        )
    sizes = []
    for step in range(steps):
        if upsample and step < steps - 1:
            size = tuple(min(c * 2 ** (step + 1), o) for c, o in zip(coarse_size, output_size))
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


def _split(result: PointResult) -> tuple[torch.Tensor, torch.Tensor | None]:
    return result if isinstance(result, tuple) else (result, None)


def subdivision_render(
    coarse: torch.Tensor,
    point_fn: PointFn | None,
    num_points: int,
    steps: int = 2,
    upsample: bool = False,
    output_size: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Render the uncertain cells of a coarse prediction with a point function.

    Each step resizes the current logits to its planned grid (linear interpolation), picks
    the ``num_points`` most uncertain cells, asks ``point_fn`` for logits at their centres and
    writes them back. Cells rendered in an earlier step at the same grid size are not picked
    again, so no cell is rendered twice in one pass (a step with no cell left renders none).
    Cells never picked keep the interpolated coarse logits exactly.

    Steps and ranking: on one grid (no ``upsample``) the rendered cells are left out of the
    next ranking and no other cell changes, so the rendered values never re-rank anything:
    two steps of N points render exactly the cells (and values) of one step of 2N, the N
    next cells of the same ranking. When the grid changes between steps (``upsample``), the
    rendered values are interpolated onto the new grid and do shape the next ranking.

    The logits are kept in fp32 (or wider) and cell centres are fp32 whatever the autocast
    setting, so under bf16 autocast the cells picked from given logits and their centres are
    those of fp32.

    Args:
        coarse: (B, K, *S) coarse logits.
        point_fn: maps (B, N, D) coordinates in [0, 1] to (B, K, N) logits, or to a pair of
            those logits and per-point gate weights (B, S, N) (or None); None only when
            ``steps`` is 0.
        num_points: N cells per step.
        steps: number of rounds; 0 returns the (resized) coarse logits.
        upsample: double the grid at each step (see ``plan_render_sizes``).
        output_size: the grid to render on (e.g. the scan's own), default see above.

    Returns:
        logits (B, K, *S_out); a bool map (B, 1, *S_out) of the cells that were rendered (a
        cell of a coarser step marks every output cell whose centre it holds); the gate map
        (B, S, *S_out) fp32 of the rendered cells' gate weights (the last write wins, 0 where
        no cell was rendered), or None when ``point_fn`` gives no gate.
    """
    logits = coarse.to(torch.promote_types(coarse.dtype, torch.float32))
    rendered = torch.zeros_like(coarse[:, :1], dtype=torch.bool)
    gate = exclude = None
    for size in plan_render_sizes(coarse.shape[2:], steps, upsample, output_size):
        if tuple(logits.shape[2:]) != size:
            logits, rendered, gate = _resize_all(logits, rendered, gate, size)
            exclude = None
        indices, coords = most_uncertain_cells(logits, num_points, exclude)
        if indices.shape[1] == 0:
            continue
        values, point_gate = _split(point_fn(coords))
        logits = scatter_to_grid(logits, indices, values)
        if point_gate is not None:
            if gate is None:
                gate = logits.new_zeros(logits.shape[0], point_gate.shape[1], *size)
            gate = scatter_to_grid(gate, indices, point_gate)
        picked = torch.zeros_like(rendered.flatten(1)).scatter_(1, indices, True)
        exclude = picked if exclude is None else exclude | picked
        rendered = rendered | picked.view_as(rendered)
    if output_size is not None and tuple(logits.shape[2:]) != tuple(output_size):
        logits, rendered, gate = _resize_all(logits, rendered, gate, output_size)
    return logits, rendered, gate


def _resize_all(
    logits: torch.Tensor, rendered: torch.Tensor, gate: torch.Tensor | None, size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits linearly, the rendered map and the gate map by nearest cell."""
    logits = _resize(logits, size, "linear")
    rendered = _resize(rendered.to(torch.uint8), size, "nearest").bool()
    return logits, rendered, None if gate is None else _resize(gate, size, "nearest")
