"""Shared test helpers: a tiny backbone with the (logits, features) contract."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn


class ToyBackbone(nn.Module):
    """A few convolutions giving logits and three feature maps at strides 4, 2, 1."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 3) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.feature_channels = [12, 8, 6]
        self.feature_strides = [4, 2, 1]
        self.stems = nn.ModuleList(
            conv(in_channels, channels, 3, padding=1) for channels in self.feature_channels
        )
        self.out = conv(6, num_classes, 1)

    def forward(self, image: torch.Tensor):
        features = []
        for stem, stride in zip(self.stems, self.feature_strides):
            pool = F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d
            pooled = pool(image, stride)
            features.append(torch.relu(stem(pooled)))
        return self.out(features[-1]), features


def small_morse(spatial_dims: int = 2, num_classes: int = 3, **options):
    """A small Morse on the toy backbone (narrow renderer) for fast tests."""
    from morse import Morse

    sizes = dict(expert_width=16, head_width=16, num_frequencies=8, train_points=64,
                 render_points=32)
    sizes.update(options)
    return Morse(ToyBackbone(spatial_dims, 1, num_classes), num_classes, spatial_dims, **sizes)
