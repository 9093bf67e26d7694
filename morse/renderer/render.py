"""Subdivision rendering at inference: re-predict the least certain cells, step by step."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from morse.renderer.points import most_uncertain_cells, scatter_to_grid

__all__ = ["plan_render_sizes", "subdivision_render"]

PointFn = Callable[[torch.Tensor], torch.Tensor]


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
        return F.interpolate(maps, size=tuple(size), mode="nearest")
    mode = "bilinear" if maps.dim() == 4 else "trilinear"
    return F.interpolate(maps, size=tuple(size), mode=mode, align_corners=False)


def subdivision_render(
    coarse: torch.Tensor,
    point_fn: PointFn,
    num_points: int,
    steps: int = 2,
    upsample: bool = False,
    output_size: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render the uncertain cells of a coarse prediction with a point function.

    Each step resizes the current logits to its planned grid (linear interpolation), picks
    the ``num_points`` most uncertain cells, asks ``point_fn`` for logits at their centres and
    writes them back. Cells rendered in an earlier step at the same grid size are not picked
    again, so no point is rendered twice in one pass. Cells never picked keep the
    interpolated coarse logits exactly.

    Args:
        coarse: (B, K, *S) coarse logits.
        point_fn: maps (B, N, D) coordinates in [0, 1] to (B, K, N) logits.
        num_points: N cells per step.
        steps: number of rounds; 0 returns the (resized) coarse logits.
        upsample: double the grid at each step (see ``plan_render_sizes``).
        output_size: the grid to render on (e.g. the scan's own), default see above.

    Returns:
        logits (B, K, *S_out) and a bool map (B, 1, *S_out) of the cells that were rendered
        (a cell of a coarser step marks every output cell it covers).
    """
    logits = coarse
    rendered = torch.zeros_like(coarse[:, :1], dtype=torch.bool)
    exclude = None
    for size in plan_render_sizes(coarse.shape[2:], steps, upsample, output_size):
        if tuple(logits.shape[2:]) != size:
            logits = _resize(logits, size, "linear")
            rendered = _resize(rendered.to(torch.uint8), size, "nearest").bool()
            exclude = None
        indices, coords = most_uncertain_cells(logits, num_points, exclude)
        logits = scatter_to_grid(logits, indices, point_fn(coords))
        picked = torch.zeros_like(rendered.flatten(1)).scatter_(1, indices, True)
        exclude = picked if exclude is None else exclude | picked
        rendered = rendered | picked.view_as(rendered)
    if not steps and output_size is not None:
        logits = _resize(logits, output_size, "linear")
        rendered = _resize(rendered.to(torch.uint8), output_size, "nearest").bool()
    return logits, rendered
