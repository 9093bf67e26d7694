"""Flip test-time augmentation: the backbone's logits averaged over mirrorings, then rendered.

Shapes: B images, C_in channels, K classes, ``*S`` the spatial shape, D = len(S).

What is averaged: the coarse logits of the backbone on the image mirrored along every subset
of its D spatial axes (4 passes in 2D, 8 in 3D, nnU-Net's set), each flipped back before the
mean. The renderer then runs once, on that mean and on the feature maps of the un-mirrored
image: it ranks cells by the averaged logits, reads them at its points and writes its own
predictions there, as without TTA. The coarse output is the averaged logits.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from morse.model.module import Morse, MorseOutput
from morse.renderer.points import GridMap

__all__ = ["FlipAveraged", "flip_axes"]


def flip_axes(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes of a (B, C, *S) tensor, the identity first.

    >>> flip_axes(2)
    [(), (2,), (3,), (2, 3)]
    >>> len(flip_axes(3))
    8
    """
    axes = range(2, 2 + spatial_dims)
    return [combo for size in range(spatial_dims + 1)
            for combo in itertools.combinations(axes, size)]


class FlipAveraged:
    """A ``Morse`` model in eval mode called like one, with flip TTA (see the module).

    ``FlipAveraged(model)(image, output_size)`` returns a ``MorseOutput`` whose ``coarse`` is
    the mean (B, K, *S) fp32 of the mirrored passes and whose ``logits`` (B, K, *S_out) are
    rendered from it.
    """

    def __init__(self, model: Morse) -> None:
        self.model = model
        self.spatial_dims = model.spatial_dims

    def __call__(
        self,
        image: torch.Tensor,
        output_size: Sequence[int] | None = None,
        grid_map: GridMap | None = None,
    ) -> MorseOutput:
        """Segment a batch (B, C_in, *S), averaging the coarse logits over every flip
        (``output_size`` and ``grid_map`` as ``Morse.forward``'s)."""
        flips = flip_axes(self.spatial_dims)
        coarse, features = self.model.backbone_outputs(image)
        total = coarse.float()
        for axes in flips[1:]:
            flipped, _ = self.model.backbone_outputs(image.flip(axes))
            total = total + flipped.float().flip(axes)
        return self.model.render(total / len(flips), features, output_size, grid_map)
