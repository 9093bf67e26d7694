"""Point machinery shared by training and inference, one code path for 2D and 3D.

Shape shorthand used throughout this module:
    B images, C channels, K classes, P points, D spatial dims (2 or 3), ``*S`` the spatial shape.

Coordinates are continuous, in ``[0, 1]^D``, ordered like the tensor's spatial axes (for a
``(B, C, H, W)`` map, ``coords[..., 0]`` runs along H and ``coords[..., 1]`` along W). A grid
cell ``i`` of a size-``n`` axis has its centre at ``(i + 0.5) / n``, which is exactly where
``grid_sample(align_corners=False)`` reads the cell's own value, whatever the resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from morse.shapes import size_min

__all__ = [
    "point_sample",
    "sampling_grid",
    "cell_indices",
    "sample_at",
    "sample_rows",
    "margin_uncertainty",
    "sample_training_points",
    "cell_centres",
    "most_uncertain_cells",
    "scatter_to_grid",
    "GridMap",
    "grid_centres",
    "cell_table",
    "corner_weights",
    "sample_table",
]


def sampling_grid(coords: torch.Tensor) -> torch.Tensor:
    """``grid_sample``'s grid for points: (B, P, D) in [0, 1] -> (B, P, 1[, 1], D) in [-1, 1].

    Compute it once and read every map of the same points with ``sample_at``.
    """
    spatial_dims = coords.shape[-1]
    # grid_sample wants [-1, 1] and the last axis ordered (x, y[, z]) = reversed tensor axes.
    grid = (2.0 * coords - 1.0).flip(-1)
    return grid.view(coords.shape[0], coords.shape[1], *([1] * (spatial_dims - 1)), spatial_dims)


def sample_at(maps: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Read ``maps`` (B, C, *S) at a ``sampling_grid``: (B, C, P), fp32 (or wider)."""
    spatial_dims = maps.dim() - 2
    if grid.shape[-1] != spatial_dims:
        raise ValueError(
            f"coords have {grid.shape[-1]} coordinates per point but the maps are "
            f"{spatial_dims}D (shape {tuple(maps.shape)})"
        )
    # Cast the maps up, never the grid down: in bf16 a coordinate near 1 is off by 1/256, which
    # is a whole cell of a 512 grid. Sampling runs in (at least) fp32 and returns that dtype.
    dtype = torch.promote_types(torch.promote_types(maps.dtype, grid.dtype), torch.float32)
    values = F.grid_sample(
        maps.to(dtype), grid.to(dtype), mode=mode, padding_mode="border", align_corners=False
    )
    return values.view(maps.shape[0], maps.shape[1], grid.shape[1])


def sample_rows(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``sample_at`` as rows, the renderer's layout: (B, C, *S) -> (B, P, C).

    A transposed view, not a copy: ``F.linear`` reads it as it is (copying it would cost a
    third of the GEMM that follows).
    """
    return sample_at(maps, grid).transpose(1, 2)


def cell_table(maps: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A map as one row per cell: (B, C, *S) -> (B * prod(S), C), fp32 (or wider) unless
    ``dtype`` is given (bf16 for bf16 point MLPs at inference: half the bytes to read).

    Free for a channels-last fp32 map (e.g. an expert's entered map); a copy otherwise.
    """
    dtype = dtype or torch.promote_types(maps.dtype, torch.float32)
    # contiguous rows: embedding_bag on a strided table (e.g. the transposed view that a
    # single image's channels-first map reshapes to) is many times slower
    return maps.movedim(1, -1).reshape(-1, maps.shape[1]).to(dtype).contiguous()


def corner_weights(
    points: torch.Tensor, images: torch.Tensor, size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where ``grid_sample`` (linear, ``align_corners=False``, border padding) reads points.

    Args:
        points: (M, D) coordinates in [0, 1] (fp32).
        images: (M,) the image each point belongs to.
        size: S, the map's spatial shape.

    Returns:
        rows (M, 2^D) of a ``cell_table`` of that map and their weights (M, 2^D), fp32,
        summing to 1 per point.

    >>> rows, weights = corner_weights(torch.tensor([[0.5, 0.25]]), torch.tensor([1]), (2, 4))
    >>> print(rows.tolist(), weights.tolist())
    [[13, 12, 9, 8]] [[0.25, 0.25, 0.25, 0.25]]
    """
    rows = images.to(torch.long) * math.prod(size)
    weights = torch.ones_like(points[:, 0])
    corners = [(rows, weights)]
    stride = math.prod(size)
    for axis, n in enumerate(size):
        stride //= n
        # grid_sample's source position of the point, clipped to the border cells' centres
        position = (points[:, axis].to(torch.float32) * n - 0.5).clamp_(0, n - 1)
        low = position.floor()
        high_weight = position - low
        low = low.to(torch.long)
        high = (low + 1).clamp_(max=n - 1)
        corners = [(r + cell * stride, w * part) for r, w in corners
                   for cell, part in ((high, high_weight), (low, 1 - high_weight))]
    return (torch.stack([r for r, _ in corners], 1), torch.stack([w for _, w in corners], 1))


def sample_table(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted sum of each point's ``corner_weights`` rows: (M, C) in the table's dtype.

    One fused gather-and-sum (``embedding_bag``): in 3D much faster than ``grid_sample`` on
    CPU, whose 3D kernel is not vectorised (timings in docs/explanation/performance.md), with
    the same values up to float rounding, gradients into the table included.
    """
    with torch.autocast(table.device.type, enabled=False):
        return F.embedding_bag(rows, table, per_sample_weights=weights.to(table.dtype),
                               mode="sum")


def point_sample(
    maps: torch.Tensor, coords: torch.Tensor, mode: str = "bilinear"
) -> torch.Tensor:
    """Read ``maps`` at continuous coordinates.

    Args:
        maps: (B, C, *S) with ``len(S) == D``.
        coords: (B, P, D) in [0, 1], axis order as in ``S``.
        mode: "bilinear" (trilinear in 3D) for features and logits, "nearest" for labels.

    Returns:
        (B, C, P) values at the points, in fp32 (or wider) whatever the maps' dtype.

    >>> grid = torch.arange(4.0).view(1, 1, 2, 2)
    >>> point_sample(grid, torch.tensor([[[0.25, 0.75], [0.5, 0.5]]]))
    tensor([[[1.0000, 1.5000]]])
    """
    return sample_at(maps, sampling_grid(coords), mode)


def margin_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Top-2 margin uncertainty: second-largest minus largest logit (0 is most uncertain).

    Args:
        logits: (B, K, ...) with K >= 2.

    Returns:
        (B, 1, ...) values <= 0; larger means less sure (no gradient: it ranks cells).

    >>> margin_uncertainty(torch.tensor([[[3.0, 1.0], [1.0, 1.0]]]).transpose(1, 2))
    tensor([[[-2.,  0.]]])
    """
    if logits.shape[1] < 2:
        raise ValueError(f"need at least 2 classes for a margin, got logits {tuple(logits.shape)}")
    # A running top-2 over the K class maps, elementwise: the same values as
    # ``topk(2, dim=1)`` (ties give 0), far faster on CPU, where topk runs across a
    # non-contiguous class axis (timings in docs/explanation/performance.md).
    logits = logits.detach()  # it ranks cells; nothing is learnt through it
    first = logits[:, 0].clone()
    second = torch.minimum(first, logits[:, 1])
    torch.maximum(first, logits[:, 1], out=first)
    low = torch.empty_like(first)
    for index in range(2, logits.shape[1]):
        candidate = logits[:, index]
        torch.maximum(second, torch.minimum(first, candidate, out=low), out=second)
        torch.maximum(first, candidate, out=first)
    return second.sub_(first).unsqueeze(1)


def sample_training_points(
    coarse: torch.Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PointRend's training point selection, biased towards uncertain regions.

    Draws ``oversample_ratio * num_points`` uniform points, keeps the ``importance_ratio``
    share that is most uncertain, and fills the rest with fresh uniform points.

    The uncertainty is computed on the logits *interpolated at each point*, not read from a
    per-cell uncertainty map: interpolating a margin map would blur two sharp per-cell margins
    into a fake certain value between classes, which misses exactly the boundaries we want.

    Args:
        coarse: (B, K, *S) coarse logits (no gradient is needed through the selection).
        num_points: P.
        oversample_ratio: k >= 1.
        importance_ratio: beta in [0, 1].
        generator: optional random generator for reproducible draws.

    Returns:
        (B, P, D) coordinates in [0, 1].
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_ratio <= 1:
        raise ValueError(f"importance_ratio must be in [0, 1], got {importance_ratio}")
    batch, spatial_dims = coarse.shape[0], coarse.dim() - 2
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_ratio * num_points)
    num_random = num_points - num_uncertain
    kwargs = {"device": coarse.device, "generator": generator}

    candidates = torch.rand(batch, num_sampled, spatial_dims, **kwargs)
    with torch.no_grad():
        uncertainty = margin_uncertainty(point_sample(coarse.detach(), candidates))[:, 0]
        top = uncertainty.topk(num_uncertain, dim=1).indices  # (B, P_uncertain)
    chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, spatial_dims))
    if num_random > 0:
        chosen = torch.cat([chosen, torch.rand(batch, num_random, spatial_dims, **kwargs)], 1)
    return chosen


def cell_centres(indices: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Coordinates of the centres of flat grid cells.

    Args:
        indices: (B, N) flat indices into a grid of ``spatial_shape`` (C order).
        spatial_shape: S.

    Returns:
        (B, N, D) fp32 centres in (0, 1), exact for any axis up to 2^24 cells (keep them fp32:
        bf16 moves the centres of a 512-cell axis by up to a cell).

    >>> cell_centres(torch.tensor([[0, 5]]), (2, 4))
    tensor([[[0.2500, 0.1250],
             [0.7500, 0.3750]]])
    """
    coords = []
    remainder = indices
    for size in reversed(spatial_shape):
        # a tensor, not a Python number: the ONNX exporter takes no symbolic size as a scalar
        size = torch.scalar_tensor(size, dtype=indices.dtype, device=indices.device)
        coords.append((remainder % size).to(torch.float32).add_(0.5).div_(size))
        remainder = remainder // size
    return torch.stack(coords[::-1], dim=-1)


def most_uncertain_cells(
    logits: torch.Tensor,
    num_points: int,
    exclude: torch.Tensor | None = None,
    fill: bool = False,
    clip: bool = True,
    uncertainty: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The N grid cells whose current prediction is least sure (inference).

    Args:
        logits: (B, K, *S) current logits on the grid.
        num_points: N; clipped to the cells left (see below).
        exclude: optional (B, prod(S)) bool, cells not to pick (already rendered, certain).
        fill: when images have different numbers of cells left, N' is the most of them
            (clipped to N) and an image with fewer gets excluded cells to fill its row (find
            them with ``exclude.gather(1, indices)``); without it, the fewest.
        clip: False: N' = min(N, prod(S)) whatever is excluded, a shape known without
            reading the values (rows beyond the cells left are excluded cells, as with
            ``fill``).
        uncertainty: (B, prod(S)) ``margin_uncertainty`` of ``logits``, flattened, when the
            caller has it already (it is computed from ``logits`` otherwise).

    Returns:
        indices (B, N') flat cell indices, unique per image and never excluded (unless
        ``fill`` or not ``clip``), and their fp32 centres (B, N', D). N' = min(N, cells not
        excluded), the fewest (``fill``: the most) over the batch; N' = 0 when no cell is
        left.

    >>> logits = torch.tensor([[[0.0, 1.0, 3.0]]]).expand(1, 2, 3).clone()
    >>> logits[0, 1] = torch.tensor([0.0, 0.0, 0.0])
    >>> most_uncertain_cells(logits, 5, exclude=torch.tensor([[True, False, False]]))[0]
    tensor([[1, 2]])
    """
    spatial_shape = logits.shape[2:]
    if uncertainty is None:
        uncertainty = margin_uncertainty(logits).flatten(1)  # (B, prod(S))
    num_points = size_min(num_points, uncertainty.shape[1])
    if exclude is not None:
        uncertainty = uncertainty.masked_fill(exclude, -math.inf)
    if exclude is not None and clip:
        # topk would fill N beyond the cells left with excluded ones (-inf ranks last, not out)
        left = (~exclude).sum(1)
        num_points = min(num_points, int(left.max() if fill else left.min()))
    indices = uncertainty.topk(num_points, dim=1).indices
    return indices, cell_centres(indices, spatial_shape)


def scatter_to_grid(
    grid: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, inplace: bool = False
) -> torch.Tensor:
    """Write point values back into their grid cells (out of place unless ``inplace``).

    Args:
        grid: (B, C, *S), contiguous when ``inplace``.
        indices: (B, N) flat cell indices.
        values: (B, C, N).
        inplace: write into ``grid`` itself (saves copying the whole grid).

    Returns:
        (B, C, *S) with the N cells replaced (``grid`` itself when ``inplace``).

    >>> scatter_to_grid(torch.zeros(1, 1, 2, 2), torch.tensor([[3]]), torch.ones(1, 1, 1))
    tensor([[[[0., 0.],
              [0., 1.]]]])
    """
    flat = grid.flatten(2)
    index = indices.unsqueeze(1).expand(-1, grid.shape[1], -1)
    if inplace:
        if not grid.is_contiguous():
            raise ValueError("scatter_to_grid(inplace=True) needs a contiguous grid")
        flat.scatter_(2, index, values.to(flat.dtype))
        return grid
    return flat.scatter(2, index, values.to(flat.dtype)).view_as(grid)


@dataclass(frozen=True)
class GridMap:
    """Where an output grid lies in the coarse map's coordinates, axis by axis.

    A point at ``c`` in [0, 1]^D of the output grid is at ``c * scale + offset`` in the
    coarse map's [0, 1]^D. This places a rendering grid anywhere over the network's input:
    the unpadded part of a padded slice, a scan's own voxels inside a sliding window, a grid
    finer or coarser than the network's. The output grid's axes follow the coarse map's.

    >>> GridMap((0.5, 1.0), (0.25, 0.0)).apply(torch.tensor([[[0.0, 0.5], [1.0, 1.0]]]))
    tensor([[[0.2500, 0.5000],
             [0.7500, 1.0000]]])
    """

    scale: tuple[float, ...]
    offset: tuple[float, ...]

    def apply(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., D) output-grid coordinates -> (..., D) coarse-map coordinates, fp32."""
        scale = torch.tensor(self.scale, dtype=torch.float32, device=coords.device)
        offset = torch.tensor(self.offset, dtype=torch.float32, device=coords.device)
        return coords.to(torch.float32) * scale + offset


def grid_centres(size: Sequence[int], grid_map: GridMap, device=None) -> torch.Tensor:
    """The centres of every cell of an output grid, in the coarse map's coordinates.

    Args:
        size: S_out, the output grid (D axes).
        grid_map: where it lies over the coarse map.

    Returns:
        (*S_out, D) fp32 coordinates, ready for ``sampling_grid`` after a reshape.

    >>> grid_centres((2,), GridMap((1.0,), (0.0,)))
    tensor([[0.2500],
            [0.7500]])
    """
    axes = [(torch.arange(n, dtype=torch.float32, device=device) + 0.5) / n for n in size]
    return grid_map.apply(torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1))


def cell_indices(coords: torch.Tensor, size: Sequence[int],
                 grid_map: GridMap | None = None) -> torch.Tensor:
    """The flat index of the cell of a grid each point is the centre of (``grid_centres``'
    inverse): (..., D) points, mapped by ``grid_map`` where given -> (...,) int64.

    >>> cell_indices(grid_centres((2, 3), GridMap((1.0, 1.0), (0.0, 0.0))), (2, 3)).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    if grid_map is not None:  # back to the output grid's own [0, 1]^D
        coords = (coords - coords.new_tensor(grid_map.offset)) / coords.new_tensor(grid_map.scale)
    # a centre lies half a cell from the cell's sides: floor is safe from rounding
    cells = (coords * coords.new_tensor(tuple(size))).floor_().long()
    flat = torch.zeros_like(cells[..., 0])
    for axis, n in enumerate(size):
        flat = flat * n + cells[..., axis].clamp(0, n - 1)
    return flat