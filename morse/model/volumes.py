"""Whole-volume inference: 2D slice by slice, 3D by sliding window; coarse and rendered kept.

Volumes are (C, *S) arrays in nibabel's order; 2D models see slices along the last axis.

The renderer writes on an *output grid* that spans the volume's field of view: by default the
volume's own grid, or any other number of cells per axis (``output_shape``: a scan's own
voxels when the network ran on a resampled copy of it). Points are placed at the output
cells' centres through a ``GridMap``, so no label map is ever resampled; the coarse logits
are read at the same centres. ``render_upsample`` does not apply here: a model that
upsamples while rendering would return a map ``2**steps`` times the input, which the slice
crop and the window stitching would place on the wrong voxels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from morse.device import autocast_context
from morse.model.module import Morse
from morse.model.settings import InferenceConfig
from morse.model.tta import FlipAveraged
from morse.renderer.points import GridMap
from morse.renderer.render import onto_grid
from morse.shapes import PAD_MULTIPLE, padded_size

__all__ = ["VolumePrediction", "predict_volume"]


@dataclass
class VolumePrediction:
    """One volume's prediction on its own grid.

    Attributes:
        coarse: (*S) int labels of the backbone's logits.
        rendered: (*S) int labels after MORSE's rendering.
        rendered_points: (*S) bool, the voxels the renderer re-predicted.
        probabilities: (K, *S) float32 softmax of the rendered logits, when asked for.
        gate: (*S) uint8, which scale's expert weighed most where the renderer re-predicted:
            0 elsewhere, ``s + 1`` for scale ``s`` (0 coarsest), when asked for and the model
            has experts.
    """

    coarse: np.ndarray
    rendered: np.ndarray
    rendered_points: np.ndarray
    probabilities: np.ndarray | None = None
    gate: np.ndarray | None = None


Forward = Morse | FlipAveraged
"""What maps a batch (B, C_in, *S) and an ``output_size`` to a ``MorseOutput``."""

Maps = dict[str, torch.Tensor]
"""Named maps of one forward pass: coarse (B, K, *S), rendered (B, K, *S), points (B, 1, *S)
and, when asked for and available, gate (B, S_experts, *S)."""


@torch.inference_mode()  # only numpy arrays leave, so no tensor escapes inference mode
def predict_volume(
    model: Morse,
    image: np.ndarray,
    settings: InferenceConfig | None = None,
    *,
    output_shape: Sequence[int] | None = None,
    probabilities: bool = False,
    gate: bool = False,
) -> VolumePrediction:
    """Segment one volume with a 2D or 3D model.

    Args:
        model: a ``Morse`` model (put in eval mode here).
        image: (C, *S) float32, normalised as in training.
        settings: where and how the network runs (default ``InferenceConfig()``: the CPU,
            fp32, no TTA); a run's own are ``InferenceConfig.from_config(cfg, device)``.
        output_shape: the grid every map is written on, spanning the volume's field of view
            with this many cells per axis (e.g. the scan's own grid when ``image`` is its
            resampled copy); 2D models keep the slice axis (``output_shape[-1]`` must be
            ``image.shape[-1]``). Default: the volume's own grid.
        probabilities: also return the rendered softmax (K, *S_out).
        gate: also return the dominant expert of each re-predicted voxel (costs S float maps
            of the output grid's size while stitching).
    """
    settings = settings or InferenceConfig()
    model.eval().to(settings.device)
    forward: Forward = FlipAveraged(model) if settings.tta else model
    tensor = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
    own = tuple(tensor.shape[1:])
    out = own if output_shape is None else tuple(int(n) for n in output_shape)
    if len(out) != len(own) or (model.spatial_dims == 2 and out[-1] != own[-1]):
        raise ValueError(f"output_shape {out} does not fit a volume of shape {own} (2D models "
                         "keep the slice axis)")
    with autocast_context(settings.device, settings.precision):
        if model.spatial_dims == 2:
            maps = _predict_slices(forward, tensor, settings, gate, out[:2])
        elif out == own:
            maps = _predict_sliding(forward, tensor, settings, gate)
        else:
            maps = _predict_windows(forward, tensor, settings, gate, out)
    points = maps["points"][0] > 0
    return VolumePrediction(
        coarse=maps["coarse"].argmax(0).cpu().numpy().astype(np.int64),
        rendered=maps["rendered"].argmax(0).cpu().numpy().astype(np.int64),
        rendered_points=points.cpu().numpy(),
        probabilities=maps["rendered"].softmax(0).cpu().numpy() if probabilities else None,
        gate=_dominant_expert(maps["gate"], points) if "gate" in maps else None,
    )


def _dominant_expert(gate: torch.Tensor, points: torch.Tensor) -> np.ndarray:
    """(S, *S) gate weights and (*S) rendered voxels -> (*S) uint8, 0 or 1 + the top expert."""
    return torch.where(points, gate.argmax(0) + 1, 0).cpu().numpy().astype(np.uint8)


def _named_maps(out, want_gate: bool) -> Maps:
    """The maps of a ``MorseOutput`` as float tensors (points 0/1; gate when asked for)."""
    points = out.rendered if out.rendered is not None else torch.zeros_like(out.coarse[:, :1])
    maps = {"coarse": out.coarse.float(), "rendered": out.logits.float(),
            "points": points.float()}
    if want_gate and out.gate is not None:
        maps["gate"] = out.gate.float()
    return maps


def _predict_slices(
    model: Forward,
    volume: torch.Tensor,
    settings: InferenceConfig,
    want_gate: bool,
    plane: tuple[int, ...],
) -> Maps:
    """(C, H, W, Z) -> maps (C_map, *plane, Z) on the CPU, slice batch by slice batch."""
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, volume.shape[-1], settings.slice_batch_size):
        batch = volume[..., start : start + settings.slice_batch_size]
        slices = batch.permute(3, 0, 1, 2).to(settings.device)
        for name, maps in _predict_slice_batch(model, slices, settings.slice_size, want_gate,
                                               plane).items():
            parts.setdefault(name, []).append(maps.cpu())
    return {name: torch.cat(maps).permute(1, 2, 3, 0) for name, maps in parts.items()}


def _predict_slice_batch(
    model: Forward,
    slices: torch.Tensor,
    slice_size: Sequence[int] | None,
    want_gate: bool,
    plane: tuple[int, ...],
) -> Maps:
    """(B, C, H, W) -> maps (B, C_map, *plane), the network run on the slices resized to
    ``slice_size`` or padded to ``PAD_MULTIPLE`` at their far ends."""
    size = tuple(slices.shape[2:])
    if slice_size is not None and tuple(slice_size) != size:
        net_input = F.interpolate(slices, size=tuple(slice_size), mode="bilinear",
                                  align_corners=False)
        scale = (1.0, 1.0)
    else:
        padded = padded_size(size, PAD_MULTIPLE)
        pad = [0, padded[1] - size[1], 0, padded[0] - size[0]]
        net_input = F.pad(slices, pad, mode="replicate") if any(pad) else slices
        scale = tuple(n / p for n, p in zip(size, padded))
    exact = scale == (1.0, 1.0) and plane == tuple(net_input.shape[2:])
    return _mapped_maps(model, net_input, plane, None if exact else GridMap(scale, (0.0, 0.0)),
                        want_gate)


def _mapped_maps(
    model: Forward, net_input: torch.Tensor, size: tuple[int, ...], grid_map: GridMap | None,
    want_gate: bool,
) -> Maps:
    """The maps of one forward pass on an output grid of ``size`` placed by ``grid_map``
    (None: the input's own grid), the coarse logits read at the same cells."""
    out = model(net_input, output_size=size, grid_map=grid_map)
    maps = _named_maps(out, want_gate)
    if grid_map is not None:
        maps["coarse"] = onto_grid(maps["coarse"], size, grid_map)
    return maps


def _predict_sliding(
    model: Forward, volume: torch.Tensor, settings: InferenceConfig, want_gate: bool
) -> Maps:
    """(C, *S) -> maps (C_map, *S), windows stitched by MONAI with Gaussian weights."""
    names: list[str] = []

    def predictor(window: torch.Tensor) -> tuple[torch.Tensor, ...]:
        maps = _named_maps(model(window, output_size=window.shape[2:]), want_gate)
        names[:] = list(maps)
        return tuple(maps.values())

    whole = padded_size(volume.shape[1:], PAD_MULTIPLE)
    roi = settings.patch_size or whole
    stitched = sliding_window_inference(
        volume[None], roi, settings.sw_batch_size, predictor, overlap=settings.overlap,
        mode="gaussian", sw_device=settings.sw_device or settings.device, device="cpu",
    )
    return {name: maps[0].float() for name, maps in zip(names, stitched)}


def _predict_windows(
    model: Forward,
    volume: torch.Tensor,
    settings: InferenceConfig,
    want_gate: bool,
    out_shape: tuple[int, ...],
) -> Maps:
    """(C, *S) -> maps (C_map, *out_shape) on an output grid spanning the volume's field of
    view: windows of the network's grid (placed as MONAI's sliding window places them), each
    rendering the output cells whose centres it holds, blended with MONAI's Gaussian
    weights (sigma 0.125 of the window) taken at those cells."""
    shape = tuple(volume.shape[1:])
    roi = settings.patch_size or padded_size(shape, PAD_MULTIPLE)
    pads = [max(r - n, 0) for n, r in zip(shape, roi)]
    if any(pads):
        pad = [p for axis_pad in reversed(pads) for p in (0, axis_pad)]
        volume = F.pad(volume[None], pad, mode="replicate")[0]
    starts = [_window_starts(n + p, r, settings.overlap) for n, p, r in zip(shape, pads, roi)]
    sums: dict[str, torch.Tensor] = {}
    weight = torch.zeros(out_shape)
    for corner in itertools.product(*starts):
        spans = [_covered_cells(s, r, n, m) for s, r, n, m in zip(corner, roi, shape, out_shape)]
        if any(lo >= hi for lo, hi in spans):
            continue
        size = tuple(hi - lo for lo, hi in spans)
        grid_map = GridMap(
            tuple(k * n / (m * r) for k, n, m, r in zip(size, shape, out_shape, roi)),
            tuple((lo * n / m - s) / r for (lo, _), n, m, s, r in
                  zip(spans, shape, out_shape, corner, roi)),
        )
        window = volume[(slice(None), *[slice(s, s + r) for s, r in zip(corner, roi)])]
        maps = _mapped_maps(model, window[None].to(settings.device), size, grid_map, want_gate)
        cells = tuple(slice(lo, hi) for lo, hi in spans)
        weights = _gaussian_weights(size, grid_map)
        weight[cells] += weights
        _blend(sums, maps, cells, weights, out_shape)
    return {name: values if name == "points" else values / weight
            for name, values in sums.items()}


def _blend(sums: dict[str, torch.Tensor], maps: Maps, cells: tuple[slice, ...],
           weights: torch.Tensor, out_shape: tuple[int, ...]) -> None:
    """Add one window's maps (1, C_map, *cells) into the running sums (C_map, *out_shape):
    weighted, except the rendered-cell map, which is the maximum (any window rendered it)."""
    for name, values in maps.items():
        values = values[0].float().cpu()
        total = sums.setdefault(name, torch.zeros(values.shape[0], *out_shape))
        region = (slice(None), *cells)
        if name == "points":
            total[region] = total[region].maximum(values)
        else:
            total[region] += values * weights


def _window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Where windows of ``roi`` cells start along an axis of ``size`` (MONAI's scan).

    >>> _window_starts(100, 48, 0.5)
    [0, 24, 48, 52]
    """
    interval = max(int(roi * (1 - overlap)), 1)
    count = math.ceil(max(size - roi, 0) / interval) + 1
    return sorted({min(i * interval, size - roi) for i in range(count)})


def _covered_cells(start: int, roi: int, size: int, out_size: int) -> tuple[int, int]:
    """The output cells (lo, hi) whose centres lie in the window ``[start, start + roi)`` of
    the network axis of ``size`` cells (clipped to the volume), on an axis of ``out_size``.

    >>> _covered_cells(0, 4, 8, 16), _covered_cells(4, 4, 8, 16)
    ((0, 8), (8, 16))
    """
    def first_at_or_after(position: float) -> int:
        return min(max(math.ceil(position * out_size / size - 0.5 - 1e-9), 0), out_size)

    return first_at_or_after(start), first_at_or_after(min(start + roi, size))


def _gaussian_weights(size: tuple[int, ...], grid_map: GridMap) -> torch.Tensor:
    """(*size) product of per-axis Gaussians of the cells' positions in their window."""
    weights = torch.ones(size)
    for axis, (count, scale, offset) in enumerate(zip(size, grid_map.scale, grid_map.offset)):
        position = ((torch.arange(count) + 0.5) / count) * scale + offset - 0.5
        shape = [1] * len(size)
        shape[axis] = count
        weights = weights * torch.exp(-0.5 * (position / 0.125) ** 2).view(shape)
    return weights
