"""Whole-volume inference: 2D slice by slice, 3D by sliding window; coarse and rendered kept.

Volumes are (C, *S) arrays in nibabel's order; 2D models see slices along the last axis.

The renderer writes on an *output grid* that spans the volume's field of view: by default the
volume's own grid, or any other number of cells per axis (``output_shape``: a scan's own
voxels when the network ran on a resampled copy of it). Points are placed at the output
cells' centres through a ``GridMap``, so no label map is ever resampled; the coarse logits
are read at the same centres. 3D windows are MONAI's (its padding, placement and Gaussian
blending) on every output grid. ``render_upsample`` does not apply here: a model that
upsamples while rendering would return a map ``2**steps`` times the input, which the slice
crop and the window stitching would place on the wrong voxels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from morse.device import autocast_context
from morse.model.module import Morse
from morse.model.settings import InferenceConfig
from morse.model.tta import FlipAveraged
from morse.renderer.points import GridMap, margin_uncertainty
from morse.renderer.render import onto_grid
from morse.shapes import PAD_MULTIPLE, padded_size

__all__ = ["VolumePrediction", "predict_volume", "slice_input"]


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
        margin: (*S) float32 top-2 margin (largest minus second largest) of the coarse
            logits on the output grid, the renderer's ranking, when asked for.
    """

    coarse: np.ndarray
    rendered: np.ndarray
    rendered_points: np.ndarray
    probabilities: np.ndarray | None = None
    gate: np.ndarray | None = None
    margin: np.ndarray | None = None


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
    margin: bool = False,
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
        margin: also return the coarse top-2 margin of each output cell.

    Memory with 3D windows stitched on the CPU (``sw_device`` None or "cpu"): the input's
    padded copy, the output grid's maps (2K + 2 float32 maps divided in place, two int64
    label maps and a bool map; more with ``probabilities``, ``gate`` or ``margin``) and one
    batch of windows; nothing else grows with the volume (tests/test_inference_volumes.py
    measures it).
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
        else:
            maps = _predict_windows(forward, tensor, settings, gate, out)
    points = maps["points"][0] > 0
    return VolumePrediction(
        coarse=_labels(maps["coarse"]),
        rendered=_labels(maps["rendered"]),
        rendered_points=points.cpu().numpy(),
        probabilities=maps["rendered"].softmax(0).cpu().numpy() if probabilities else None,
        gate=_dominant_expert(maps["gate"], points) if "gate" in maps else None,
        margin=(-margin_uncertainty(maps["coarse"][None])[0, 0]).cpu().numpy() if margin
        else None,
    )


def _labels(logits: torch.Tensor) -> np.ndarray:
    """(K, *S) logits -> (*S) int64 labels, the first largest class as ``argmax``.

    ``max``'s indices: on the CPU ``argmax`` over a short class axis is several times slower
    (it was 40% of predicting a 2D demo volume)."""
    return logits.max(0).indices.cpu().numpy().astype(np.int64, copy=False)


def _dominant_expert(gate: torch.Tensor, points: torch.Tensor) -> np.ndarray:
    """(S, *S) gate weights and (*S) rendered voxels -> (*S) uint8, 0 or 1 + the top expert."""
    return torch.where(points, gate.max(0).indices + 1, 0).cpu().numpy().astype(np.uint8)


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
    net_input, grid_map = slice_input(slices, slice_size, plane)
    return _mapped_maps(model, net_input, plane, grid_map, want_gate)


def slice_input(
    slices: torch.Tensor, slice_size: Sequence[int] | None, plane: Sequence[int] | None = None
) -> tuple[torch.Tensor, GridMap | None]:
    """The network input of slices (B, C, H, W), and where the output grid lies in it.

    The slices are resized bilinearly to ``slice_size``, or without one padded (edge values)
    at their far ends to a multiple of ``PAD_MULTIPLE``; the output grid, ``plane`` cells
    (default the slices' own), spans the slices' field of view. Under ``torch.export`` the
    sizes are symbolic, so the slices are always resized or padded (by zero cells where
    nothing is needed) and the grid always mapped: the same cells, values equal up to float
    rounding, and no branch on a size.

    Returns:
        the network input (B, C, *S_net) and the ``GridMap`` of the output grid over it
        (None: the output grid is the input's own).
    """
    size = tuple(slices.shape[2:])
    plane = size if plane is None else tuple(plane)
    symbolic = torch.compiler.is_exporting()
    if slice_size is not None:  # as in training: every slice at slice_size, never padded
        net_input = slices if not symbolic and tuple(slice_size) == size else F.interpolate(
            slices, size=tuple(slice_size), mode="bilinear", align_corners=False)
        scale = (1.0, 1.0)
    else:
        padded = padded_size(size, PAD_MULTIPLE)
        pad = [0, padded[1] - size[1], 0, padded[0] - size[0]]
        net_input = F.pad(slices, pad, mode="replicate") if symbolic or any(pad) else slices
        scale = tuple(n / p for n, p in zip(size, padded))
    if not symbolic and scale == (1.0, 1.0) and plane == tuple(net_input.shape[2:]):
        return net_input, None
    return net_input, GridMap(scale, (0.0, 0.0))


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


@dataclass(frozen=True)
class _Window:
    """One sliding window and the output cells it renders.

    Attributes:
        network: its slices of the padded volume, a window's size per axis.
        cells: (lo, hi) per axis: the output cells whose centres it holds, numbered on the
            output grid extended over the padding, so they may run past [0, S_out).
        grid_map: where those cells lie in the window (None: exactly the window's own cells).
    """

    network: tuple[slice, ...]
    cells: tuple[tuple[int, int], ...]
    grid_map: GridMap | None

    @property
    def size(self) -> tuple[int, ...]:
        """The cells it renders per axis."""
        return tuple(hi - lo for lo, hi in self.cells)


def _predict_windows(
    model: Forward,
    volume: torch.Tensor,
    settings: InferenceConfig,
    want_gate: bool,
    out_shape: tuple[int, ...],
) -> Maps:
    """(C, *S) -> maps (C_map, *out_shape) on an output grid spanning the volume's field of
    view, by MONAI's sliding window.

    The volume is padded as ``sliding_window_inference`` pads it (zeros, split evenly around
    each axis shorter than a window), windows are placed by MONAI's ``dense_patch_slices``
    and blended with its Gaussian importance map. Each window renders the output cells whose
    centres it holds and weighs them by the importance map read at those cells, so on the
    volume's own grid this is ``sliding_window_inference`` itself. Every map is the weighted
    mean of the windows' (the points map is > 0 where any window rendered).
    """
    shape = tuple(volume.shape[1:])
    roi = settings.patch_size or padded_size(shape, PAD_MULTIPLE)
    missing = [max(r - n, 0) for n, r in zip(shape, roi)]
    low = [m // 2 for m in missing]
    padded = F.pad(volume, [p for m, lo in zip(missing[::-1], low[::-1]) for p in (lo, m - lo)])
    # the step sliding_window_inference takes (private in MONAI, pinned below 1.7)
    steps = _get_scan_interval(padded.shape[1:], roi, len(roi), (settings.overlap,) * len(roi))
    windows = [_place(network, low, shape, out_shape)
               for network in dense_patch_slices(padded.shape[1:], roi, steps)]
    stitch = torch.device(settings.sw_device or "cpu")
    importance = compute_importance_map(roi, mode="gaussian", device=stitch)
    sums: dict[str, torch.Tensor] = {}
    weight = torch.zeros(out_shape, device=stitch)
    for batch in _batches([w for w in windows if _inside(w, out_shape)], settings.sw_batch_size):
        size, grid_map = batch[0].size, batch[0].grid_map
        net_input = torch.stack([padded[(slice(None), *w.network)] for w in batch])
        maps = _mapped_maps(model, net_input.to(settings.device), size, grid_map, want_gate)
        weights = importance if grid_map is None else onto_grid(
            importance[None, None], size, grid_map)[0, 0]
        for index, window in enumerate(batch):
            _blend(sums, weight, {name: m[index] for name, m in maps.items()}, window.cells,
                   weights)
    # in place: a second set of the volume's maps would double the stitching's memory
    return {name: values.div_(weight) for name, values in sums.items()}


def _place(network: tuple[slice, ...], low: Sequence[int], shape: Sequence[int],
           out_shape: Sequence[int]) -> _Window:
    """The output cells of a window at ``network`` of the volume padded by ``low`` cells
    before each axis of ``shape``, and where they lie in it."""
    cells, scale, offset = [], [], []
    for axis, n, m, lo_pad in zip(network, shape, out_shape, low):
        start, roi = axis.start - lo_pad, axis.stop - axis.start  # from the volume's start
        lo, hi = _first_cell(start, n, m), _first_cell(start + roi, n, m)
        cells.append((lo, hi))
        scale.append((hi - lo) * n / (m * roi))
        offset.append((lo * n / m - start) / roi)
    own = all(s == 1 for s in scale) and not any(offset)
    return _Window(network, tuple(cells), None if own else GridMap(tuple(scale), tuple(offset)))


def _first_cell(position: float, size: int, out_size: int) -> int:
    """The first cell of an axis of ``out_size`` cells whose centre lies at or after
    ``position`` on the same axis measured in ``size`` network cells (any integer: the grid
    continues past both ends).

    >>> _first_cell(4, 8, 16), _first_cell(-2, 8, 16), _first_cell(3, 8, 8)
    (8, -4, 3)
    """
    return math.ceil(position * out_size / size - 0.5 - 1e-9)


def _inside(window: _Window, out_shape: Sequence[int]) -> bool:
    """Whether the window holds a cell of the output grid (not only cells of the padding)."""
    return all(max(lo, 0) < min(hi, m) for (lo, hi), m in zip(window.cells, out_shape))


def _batches(windows: list[_Window], batch_size: int) -> Iterator[list[_Window]]:
    """Runs of at most ``batch_size`` consecutive windows rendering the same cells' layout,
    so that each run is one forward pass."""
    for _, run in itertools.groupby(windows, key=lambda w: (w.size, w.grid_map)):
        run = list(run)
        yield from (run[i : i + batch_size] for i in range(0, len(run), batch_size))


def _blend(sums: dict[str, torch.Tensor], weight: torch.Tensor, maps: Maps,
           cells: tuple[tuple[int, int], ...], weights: torch.Tensor) -> None:
    """Add one window's maps (C_map, *size) times ``weights`` (*size) into the running sums
    (C_map, *S_out) and ``weights`` into ``weight`` (*S_out), on the window's ``cells`` that
    lie in the output grid."""
    inside = tuple(slice(max(lo, 0), min(hi, m)) for (lo, hi), m in zip(cells, weight.shape))
    local = tuple(slice(s.start - lo, s.stop - lo) for s, (lo, _) in zip(inside, cells))
    weights = weights[local]
    weight[inside] += weights
    for name, values in maps.items():
        total = sums.setdefault(name, weight.new_zeros(values.shape[0], *weight.shape))
        total[(slice(None), *inside)] += values[(slice(None), *local)].float().to(
            weight.device) * weights
