"""Backbone input checks shared by every backbone: dtype, rank, channels and spatial size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from morse.shapes import padded_size, per_axis

__all__ = ["check_image", "first_logits"]


def check_image(
    image: Any,
    *,
    spatial_dims: int,
    in_channels: int | None,
    size_multiple: int | Sequence[int] = 1,
    required_size: Sequence[int] | None = None,
    name: str = "backbone",
) -> None:
    """Validate a backbone input up front, with messages that say how to fix it.

    Args:
        image: the would-be input, expected ``(B, C_in, *spatial)`` floating point.
        spatial_dims: 2 or 3; the image must have ``spatial_dims + 2`` dimensions.
        in_channels: expected ``C_in`` (``None`` skips the check).
        size_multiple: every spatial size must be a multiple of this (int or per axis).
        required_size: if given, the spatial size must equal it exactly (e.g. UNETR,
            whose position embedding is built for one ``img_size``).
        name: network name used in the messages.

    Raises:
        TypeError: not a tensor, or not a floating-point tensor.
        ValueError: wrong rank, channel count or spatial size.

    >>> check_image(torch.zeros(2, 1, 32, 48), spatial_dims=2, in_channels=1, size_multiple=16)
    >>> check_image(torch.zeros(2, 1, 30, 48), spatial_dims=2, in_channels=1, size_multiple=16)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: backbone needs ... multiple of 16, got (30, 48); pad the image to (32, 48) ...
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor image, got {type(image).__name__}")
    if not (image.is_floating_point() or image.is_complex()):
        raise TypeError(
            f"{name} expects a floating-point image, got dtype {image.dtype}; "
            "convert with image.float()"
        )
    if image.is_complex():
        raise TypeError(f"{name} expects a real floating-point image, got dtype {image.dtype}")
    if image.ndim != spatial_dims + 2:
        raise ValueError(
            f"{name} is {spatial_dims}D and expects an image of shape (B, C, "
            f"{', '.join('XYZ'[:spatial_dims])}) with {spatial_dims + 2} dimensions; "
            f"got shape {tuple(image.shape)}"
        )
    if in_channels is not None and image.shape[1] != in_channels:
        raise ValueError(
            f"{name} was built for in_channels={in_channels} but the image has "
            f"{image.shape[1]} channels (shape {tuple(image.shape)})"
        )
    spatial = tuple(image.shape[2:])  # no int(): torch.export keeps symbolic sizes symbolic
    if required_size is not None:
        required = tuple(int(s) for s in required_size)
        if spatial != required:
            raise ValueError(
                f"{name} was built for spatial size {required} (img_size) and cannot take "
                f"{spatial}; crop/pad the image to {required} or rebuild with img_size={spatial}"
            )
        return
    mult = per_axis(size_multiple, spatial_dims)
    if any(s % m for s, m in zip(spatial, mult)):
        target = padded_size(spatial, mult)
        k = mult[0] if len(set(mult)) == 1 else mult
        raise ValueError(
            f"{name} needs every spatial size to be a multiple of {k}, got {spatial}; "
            f"pad the image to {target} (e.g. monai.transforms.DivisiblePad(k={k}))."
        )


def first_logits(output: Any) -> torch.Tensor:
    """Default logits selector: the tensor itself, or element 0 of a list/tuple.

    Deep-supervision networks return ``[logits, aux_1, ...]``; the first entry is the
    full-resolution prediction.

    >>> first_logits((torch.zeros(1), torch.ones(1))).item()
    0.0
    """
    if isinstance(output, (list, tuple)):
        if not output:
            raise RuntimeError("the wrapped network returned an empty list/tuple")
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"the wrapped network returned {type(output).__name__}; pass logits_fn= to "
            "FeatureTap to say how to get the logits tensor out of it"
        )
    return output
