"""The implicit point head: an MLP over point features fed the coarse logits at every layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from morse.renderer.experts import accept_conv1d_weights, split_linear_rows

__all__ = ["ImplicitPointHead"]


class ImplicitPointHead(nn.Module):
    """PointRend's standard point head, made implicit by the coordinate encoding it is fed.

    Each hidden layer is an ``nn.Linear`` + ReLU over point rows whose input is the previous
    layer's output concatenated with the coarse logits ``c(x)``; the last layer maps to K
    logits. The same module is PointRend's head when the caller leaves the Fourier encoding out
    of ``features``. The concatenations are never built: each layer multiplies every input
    block by its own columns of the weight and sums (``split_linear_rows``), the same
    arithmetic.

    Args:
        in_channels: channels of the fine point features (encoding + fused features).
        num_classes: K.
        hidden_channels: width of every hidden layer (paper: 256).
        num_layers: number of hidden layers (paper: 3).

    >>> head = ImplicitPointHead(in_channels=8, num_classes=3, hidden_channels=16)
    >>> head([torch.randn(2, 5, 6), torch.randn(2, 5, 2)], torch.randn(2, 5, 3)).shape
    torch.Size([2, 5, 3])
    """

    def __init__(
        self, in_channels: int, num_classes: int, hidden_channels: int = 256, num_layers: int = 3
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        width = in_channels
        for _ in range(num_layers):
            self.layers.append(nn.Linear(width + num_classes, hidden_channels))
            width = hidden_channels
        self.predictor = nn.Linear(width + num_classes, num_classes)
        accept_conv1d_weights(self)

    def forward(self, features: Sequence[torch.Tensor], coarse: torch.Tensor,
                lead: torch.Tensor | None = None) -> torch.Tensor:
        """Predict logits at points.

        Args:
            features: blocks (..., c_i) of the fine point features (rows, e.g. (B, P, c_i)),
                ``sum c_i == in_channels`` (their concatenation, in order, is the input).
            coarse: (..., K) coarse logits at the same points.
            lead: (..., hidden) the first layer's product with the leading input channels
                (the coordinate code, ``PositionTable``); ``features`` then leave those out.

        Returns:
            (..., K) point logits.
        """
        hidden = list(features)
        for index, layer in enumerate(self.layers):
            hidden = [split_linear_rows(layer, [*hidden, coarse], relu=True,
                                        lead=lead if index == 0 else None)]
        return split_linear_rows(self.predictor, [*hidden, coarse])
