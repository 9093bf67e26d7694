"""BiT ResNetV2, the R50 half of TransUNet's R50+ViT-B/16 hybrid encoder (2D).

Shapes: ``B`` batch, ``W`` the root width (64 in R50), input ``(B, C_in, H, W_img)``::

    root     StdConv 7x7/2 - GroupNorm - ReLU      (B, W,   H/2,  W_img/2)   skip
    pool     max 3x3/2                             (B, W,   H/4,  W_img/4)
    stage 1  units[0] bottlenecks                  (B, 4W,  H/4,  W_img/4)   skip
    stage 2  units[1] bottlenecks, first stride 2  (B, 8W,  H/8,  W_img/8)   skip
    stage 3  units[2] bottlenecks, first stride 2  (B, 16W, H/16, W_img/16)  to the ViT

A bottleneck is conv1x1-GN-ReLU, conv3x3(stride)-GN-ReLU, conv1x1-GN, added to the shortcut
(a strided conv1x1 + per-channel GroupNorm where the shape changes), then ReLU; every conv is
weight-standardised (BiT), as in TransUNet, whose parameter names (``conv1``..``conv3``,
``gn1``..``gn3``, ``conv_proj``, ``gn_proj``) this module keeps so that Google's ``.npz`` maps
onto it one to one (:mod:`morse.backbone.pretrained`).

Two knowing departures from TransUNet: the max-pool pads by one, so every map is exactly
input / stride (TransUNet pools 112 -> 55 and zero-pads the stage-1 skip back to 56; pooling has
no weights, so pretrained files load the same); and GroupNorm takes ``gcd(32, channels)``
groups, which is 32 at R50's widths and lets narrow test variants (``width=8``) exist.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["StdConv2d", "Bottleneck", "ResNetV2"]


class StdConv2d(nn.Conv2d):
    """Conv2d whose kernel is standardised (zero mean, unit variance per output channel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        weight = (self.weight - mean) / torch.sqrt(variance + 1e-5)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with ``gcd(32, channels)`` groups (32 at R50's widths).

    >>> group_norm(256).num_groups, group_norm(8).num_groups
    (32, 8)
    """
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=eps)


class Bottleneck(nn.Module):
    """A BiT bottleneck unit; ``(B, c_in, H, W) -> (B, c_out, H/stride, W/stride)``."""

    def __init__(self, c_in: int, c_out: int, c_mid: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = StdConv2d(c_in, c_mid, 1, bias=False)
        self.gn1 = group_norm(c_mid)
        self.conv2 = StdConv2d(c_mid, c_mid, 3, stride=stride, padding=1, bias=False)
        self.gn2 = group_norm(c_mid)
        self.conv3 = StdConv2d(c_mid, c_out, 1, bias=False)
        self.gn3 = group_norm(c_out)
        self.projection = stride != 1 or c_in != c_out
        if self.projection:
            self.conv_proj = StdConv2d(c_in, c_out, 1, stride=stride, bias=False)
            self.gn_proj = nn.GroupNorm(c_out, c_out)  # per channel, eps 1e-5, as TransUNet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.gn_proj(self.conv_proj(x)) if self.projection else x
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        return F.relu(shortcut + self.gn3(self.conv3(y)))


def _stage(c_in: int, c_out: int, c_mid: int, units: int, stride: int) -> nn.Sequential:
    blocks = [Bottleneck(c_in, c_out, c_mid, stride)]
    blocks += [Bottleneck(c_out, c_out, c_mid) for _ in range(units - 1)]
    return nn.Sequential(*blocks)


class ResNetV2(nn.Module):
    """The hybrid's CNN: three skips and the stride-16 map.

    Args:
        in_channels: image channels (3 for ImageNet-pretrained weights).
        width: root width ``W`` (64 in R50).
        units: bottleneck units per stage ((3, 4, 9) in R50).

    Attributes:
        out_channels: ``16 W``, channels of the stride-16 map.
        skip_channels: ``(8 W, 4 W, W)``, the skips at strides 8, 4, 2 (coarsest first).
    """

    def __init__(self, in_channels: int = 3, width: int = 64, units: Sequence[int] = (3, 4, 9)):
        super().__init__()
        if len(units) != 3 or min(units) < 1:
            raise ValueError(f"resnet_units must be three positive counts, got {tuple(units)}")
        self.root = nn.Sequential(OrderedDict(
            conv=StdConv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            gn=group_norm(width),
            relu=nn.ReLU(),
        ))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.stages = nn.ModuleList([
            _stage(width, 4 * width, width, units[0], stride=1),
            _stage(4 * width, 8 * width, 2 * width, units[1], stride=2),
            _stage(8 * width, 16 * width, 4 * width, units[2], stride=2),
        ])
        self.out_channels = 16 * width
        self.skip_channels = (8 * width, 4 * width, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, C_in, H, W)`` -> ``(B, 16W, H/16, W/16)`` and skips at strides 8, 4, 2."""
        skip2 = self.root(x)
        skip4 = self.stages[0](self.pool(skip2))
        skip8 = self.stages[1](skip4)
        return self.stages[2](skip8), [skip8, skip4, skip2]
