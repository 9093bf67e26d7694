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
    """

    coarse: np.ndarray
    rendered: np.ndarray
    rendered_points: np.ndarray
    probabilities: np.ndarray | None = None


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
    """
    model.eval().to(device)
    tensor = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
    with autocast_context(device, precision):
        if model.spatial_dims == 2:
            coarse, rendered, points = _predict_slices(
                model, tensor, device, slice_size, slice_batch_size
            )
        else:
            coarse, rendered, points = _predict_sliding(
                model, tensor, device, patch_size, sw_batch_size, overlap, sw_device
            )
    return VolumePrediction(
        coarse=coarse.argmax(0).numpy().astype(np.int64),
        rendered=rendered.argmax(0).numpy().astype(np.int64),
        rendered_points=points.numpy(),
        probabilities=rendered.float().softmax(0).numpy() if probabilities else None,
    )


def _predict_slices(
    model: Morse,
    volume: torch.Tensor,
    device: torch.device | str,
    slice_size: Sequence[int] | None,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C, H, W, Z) -> coarse and rendered logits (K, H, W, Z) and points (H, W, Z), on CPU."""
    height, width = volume.shape[1:3]
    coarse_parts, rendered_parts, point_parts = [], [], []
    for start in range(0, volume.shape[-1], batch_size):
        slices = volume[..., start : start + batch_size].permute(3, 0, 1, 2).to(device)
        coarse, rendered, points = _predict_slice_batch(model, slices, slice_size)
        coarse_parts.append(coarse[..., :height, :width].float().cpu())
        rendered_parts.append(rendered[..., :height, :width].float().cpu())
        point_parts.append(points[:, 0, :height, :width].cpu())
    return (
        torch.cat(coarse_parts).permute(1, 2, 3, 0),
        torch.cat(rendered_parts).permute(1, 2, 3, 0),
        torch.cat(point_parts).permute(1, 2, 0),
    )


def _predict_slice_batch(
    model: Morse, slices: torch.Tensor, slice_size: Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> coarse, rendered (B, K, H', W') and points (B, 1, H', W'), H' >= H."""
    size = tuple(slices.shape[2:])
    if slice_size is not None and tuple(slice_size) != size:
        resized = F.interpolate(slices, size=tuple(slice_size), mode="bilinear",
                                align_corners=False)
        out = model(resized, output_size=size)
        coarse = F.interpolate(out.coarse, size=size, mode="bilinear", align_corners=False)
    else:
        padded = padded_size(size, PAD_MULTIPLE)
        pad = [0, padded[1] - size[1], 0, padded[0] - size[0]]
        out = model(F.pad(slices, pad, mode="replicate") if any(pad) else slices,
                    output_size=padded)
        coarse = out.coarse
    points = out.rendered if out.rendered is not None else torch.zeros_like(coarse[:, :1]).bool()
    return coarse, out.logits, points


def _predict_sliding(
    model: Morse,
    volume: torch.Tensor,
    device: torch.device | str,
    patch_size: Sequence[int] | None,
    sw_batch_size: int,
    overlap: float,
    sw_device: str | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C, *S) -> coarse and rendered logits (K, *S) and points (*S), stitched by MONAI."""

    def predictor(window: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = model(window, output_size=window.shape[2:])
        rendered = out.rendered if out.rendered is not None else torch.zeros_like(out.coarse[:, :1])
        return out.coarse.float(), out.logits.float(), rendered.float()

    whole = padded_size(volume.shape[1:], PAD_MULTIPLE)
    roi = tuple(patch_size) if patch_size is not None else whole
    coarse, rendered, points = sliding_window_inference(
        volume[None], roi, sw_batch_size, predictor, overlap=overlap, mode="gaussian",
        sw_device=sw_device or device, device="cpu",
    )
    return coarse[0].float(), rendered[0].float(), points[0, 0] > 0
