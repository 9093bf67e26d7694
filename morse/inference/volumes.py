"""Whole-volume inference: 2D slice by slice, 3D by sliding window; coarse and rendered kept.

Volumes are (C, *S) arrays in nibabel's order; 2D models see slices along the last axis.

The renderer always writes on the grid of the slice or window it was given (``output_size``),
whatever ``render_upsample`` says: a model that upsamples while rendering would otherwise
return a map ``2**steps`` times the input, which the slice crop and the window stitching
would place on the wrong voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from morse.backbone import padded_size
from morse.device import autocast_context
from morse.inference.tta import FlipAveraged
from morse.model import Morse

__all__ = ["VolumePrediction", "predict_volume", "PAD_MULTIPLE"]

PAD_MULTIPLE = 32
"""2D slices without a training size are padded to a multiple of this (every backbone's
largest stride divides it)."""


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
    *,
    device: torch.device | str = "cpu",
    slice_size: Sequence[int] | None = None,
    patch_size: Sequence[int] | None = None,
    slice_batch_size: int = 16,
    sw_batch_size: int = 2,
    overlap: float = 0.5,
    sw_device: str | None = None,
    precision: str = "fp32",
    probabilities: bool = False,
    gate: bool = False,
    tta: bool = False,
) -> VolumePrediction:
    """Segment one volume with a 2D or 3D model.

    Args:
        model: a ``Morse`` model (put in eval mode here).
        image: (C, *S) float32, normalised as in training.
        device: where the network runs.
        slice_size: 2D: the (H, W) the model was trained on; slices are resized to it and the
            renderer renders back on the slice's own grid. None: pad to ``PAD_MULTIPLE``.
        patch_size: 3D: the sliding window size (None: the whole volume at once).
        slice_batch_size: 2D slices per forward pass.
        sw_batch_size, overlap: 3D sliding-window settings (MONAI).
        sw_device: 3D: device of the stitching buffers (e.g. "cpu" for very large volumes).
        precision: "fp32", "bf16" or "fp16" autocast on the device.
        probabilities: also return the rendered softmax (K, *S).
        gate: also return the dominant expert of each re-predicted voxel (costs S float maps
            of the volume's size while stitching).
        tta: flip test-time augmentation (``morse.inference.tta``): the backbone's logits
            averaged over the 2^D mirrorings of each slice or window, then rendered.
    """
    model.eval().to(device)
    forward: Forward = FlipAveraged(model) if tta else model
    tensor = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
    with autocast_context(device, precision):
        if model.spatial_dims == 2:
            maps = _predict_slices(forward, tensor, device, slice_size, slice_batch_size, gate)
        else:
            maps = _predict_sliding(forward, tensor, device, patch_size, sw_batch_size, overlap,
                                    sw_device, gate)
    points = maps["points"][0] > 0
    return VolumePrediction(
        coarse=maps["coarse"].argmax(0).numpy().astype(np.int64),
        rendered=maps["rendered"].argmax(0).numpy().astype(np.int64),
        rendered_points=points.numpy(),
        probabilities=maps["rendered"].softmax(0).numpy() if probabilities else None,
        gate=_dominant_expert(maps["gate"], points) if "gate" in maps else None,
    )


def _dominant_expert(gate: torch.Tensor, points: torch.Tensor) -> np.ndarray:
    """(S, *S) gate weights and (*S) rendered voxels -> (*S) uint8, 0 or 1 + the top expert."""
    return torch.where(points, gate.argmax(0) + 1, 0).numpy().astype(np.uint8)


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
    device: torch.device | str,
    slice_size: Sequence[int] | None,
    batch_size: int,
    want_gate: bool,
) -> Maps:
    """(C, H, W, Z) -> maps (C_map, H, W, Z) on the CPU, slice batch by slice batch."""
    height, width = volume.shape[1:3]
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, volume.shape[-1], batch_size):
        slices = volume[..., start : start + batch_size].permute(3, 0, 1, 2).to(device)
        for name, maps in _predict_slice_batch(model, slices, slice_size, want_gate).items():
            parts.setdefault(name, []).append(maps[..., :height, :width].cpu())
    return {name: torch.cat(maps).permute(1, 2, 3, 0) for name, maps in parts.items()}


def _predict_slice_batch(
    model: Forward, slices: torch.Tensor, slice_size: Sequence[int] | None, want_gate: bool
) -> Maps:
    """(B, C, H, W) -> maps (B, C_map, H', W') with H' >= H (padded) or H' = H (resized)."""
    size = tuple(slices.shape[2:])
    if slice_size is not None and tuple(slice_size) != size:
        resized = F.interpolate(slices, size=tuple(slice_size), mode="bilinear",
                                align_corners=False)
        maps = _named_maps(model(resized, output_size=size), want_gate)
        maps["coarse"] = F.interpolate(maps["coarse"], size=size, mode="bilinear",
                                       align_corners=False)
        return maps
    padded = padded_size(size, PAD_MULTIPLE)
    pad = [0, padded[1] - size[1], 0, padded[0] - size[0]]
    out = model(F.pad(slices, pad, mode="replicate") if any(pad) else slices, output_size=padded)
    return _named_maps(out, want_gate)


def _predict_sliding(
    model: Forward,
    volume: torch.Tensor,
    device: torch.device | str,
    patch_size: Sequence[int] | None,
    sw_batch_size: int,
    overlap: float,
    sw_device: str | None,
    want_gate: bool,
) -> Maps:
    """(C, *S) -> maps (C_map, *S), windows stitched by MONAI with Gaussian weights."""
    names: list[str] = []

    def predictor(window: torch.Tensor) -> tuple[torch.Tensor, ...]:
        maps = _named_maps(model(window, output_size=window.shape[2:]), want_gate)
        names[:] = list(maps)
        return tuple(maps.values())

    whole = padded_size(volume.shape[1:], PAD_MULTIPLE)
    roi = tuple(patch_size) if patch_size is not None else whole
    stitched = sliding_window_inference(
        volume[None], roi, sw_batch_size, predictor, overlap=overlap, mode="gaussian",
        sw_device=sw_device or device, device="cpu",
    )
    return {name: maps[0].float() for name, maps in zip(names, stitched)}
