"""Stochastic experts: one expert per feature scale, fused per point by a randomly thinned gate."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PointMlp", "StochasticExperts", "ConcatFusion", "drop_experts_mask"]


class PointMlp(nn.Sequential):
    """1x1 ``Conv1d`` layers with ReLU over points: (B, C_in, P) -> (B, C_out, P).

    >>> PointMlp(4, 8, num_layers=2)(torch.randn(1, 4, 6)).shape
    torch.Size([1, 8, 6])
    """

    def __init__(self, in_channels: int, out_channels: int, num_layers: int = 2) -> None:
        layers: list[nn.Module] = []
        for index in range(num_layers):
            layers += [nn.Conv1d(in_channels if index == 0 else out_channels, out_channels, 1)]
            layers += [nn.ReLU(inplace=True)]
        super().__init__(*layers)


def drop_experts_mask(
    num_experts: int,
    max_dropped: int,
    device: torch.device | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which experts survive this step: draw r uniformly in {0..max_dropped}, drop r at random.

    Args:
        num_experts: S.
        max_dropped: r_max, clipped to S - 1 so that at least one expert always survives.

    Returns:
        (S,) float mask, 1 for kept experts and 0 for dropped ones.

    >>> mask = drop_experts_mask(5, 4, generator=torch.Generator().manual_seed(0))
    >>> mask.shape, bool(mask.sum() >= 1)
    (torch.Size([5]), True)
    """
    max_dropped = max(0, min(max_dropped, num_experts - 1))
    num_dropped = int(torch.randint(0, max_dropped + 1, (1,), generator=generator))
    order = torch.randperm(num_experts, generator=generator)
    mask = torch.ones(num_experts)
    mask[order[:num_dropped]] = 0.0
    return mask.to(device) if device is not None else mask


class StochasticExperts(nn.Module):
    """Mixture of scale experts evaluated on sampled points only.

    Each expert maps its scale's point features to a shared width; a gate over the
    concatenated expert outputs gives per-point softmax weights; the fused feature is their
    weighted sum, followed by an MLP and dropout. In training, a random number of experts
    (0..r_max) has its gate weight zeroed each step. Dropped experts are *masked*, not
    skipped, so every parameter stays in the autograd graph (DDP needs no
    ``find_unused_parameters``).

    ``renormalize=True`` (the default here) divides the surviving weights by their sum, so the
    fused feature is a convex combination of experts in training exactly as at inference; the
    authors' code leaves them unnormalised (``renormalize=False``), which makes the fused
    feature's scale depend on how many experts were dropped.

    Args:
        in_channels: channels c_s of each scale's features, one expert per entry.
        width: shared expert width (paper: 256).
        max_dropped: r_max; default S - 1.
        renormalize: renormalise surviving gate weights (see above).
        stochastic: drop experts during training; False keeps all (an ablation switch).
        dropout: dropout after the fusion MLP (paper: 0.1).

    >>> moe = StochasticExperts([8, 4], width=16)
    >>> fused, gate = moe([torch.randn(2, 8, 5), torch.randn(2, 4, 5)])
    >>> fused.shape, gate.shape
    (torch.Size([2, 16, 5]), torch.Size([2, 2, 5]))
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        width: int = 256,
        max_dropped: int | None = None,
        renormalize: bool = True,
        stochastic: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_experts = len(in_channels)
        self.max_dropped = self.num_experts - 1 if max_dropped is None else max_dropped
        self.renormalize = renormalize
        self.stochastic = stochastic
        self.experts = nn.ModuleList(PointMlp(channels, width) for channels in in_channels)
        # One linear layer over the concatenated expert outputs, the per-point counterpart of
        # the authors' single 3x3 conv gate on dense maps.
        self.gate = nn.Conv1d(self.num_experts * width, self.num_experts, 1)
        self.fuse = nn.Sequential(PointMlp(width, width, num_layers=1), nn.Dropout(dropout))
        self.out_channels = width

    def forward(
        self, point_features: Sequence[torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse per-scale point features.

        Args:
            point_features: S tensors (B, c_s, P), in the order of ``in_channels``.
            generator: optional generator for the expert dropping.

        Returns:
            fused (B, width, P) and gate weights (B, S, P) (zero for dropped experts).
        """
        outputs = torch.stack(
            [expert(features) for expert, features in zip(self.experts, point_features)], 1
        )  # (B, S, width, P)
        weights = self.gate(outputs.flatten(1, 2)).softmax(dim=1)  # (B, S, P)
        if self.training and self.stochastic and self.num_experts > 1:
            mask = drop_experts_mask(self.num_experts, self.max_dropped, weights.device, generator)
            weights = weights * mask.to(weights.dtype).view(1, -1, 1)
            if self.renormalize:
                weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        fused = (outputs * weights.unsqueeze(2)).sum(dim=1)
        return self.fuse(fused), weights


class ConcatFusion(nn.Module):
    """The "experts off" ablation: concatenate all scales' point features, one MLP, no gate.

    >>> fused, gate = ConcatFusion([8, 4], width=16)([torch.randn(2, 8, 5), torch.randn(2, 4, 5)])
    >>> fused.shape, gate is None
    (torch.Size([2, 16, 5]), True)
    """

    def __init__(self, in_channels: Sequence[int], width: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.fuse = nn.Sequential(PointMlp(sum(in_channels), width), nn.Dropout(dropout))
        self.out_channels = width

    def forward(
        self, point_features: Sequence[torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, None]:
        """(S tensors (B, c_s, P)) -> fused (B, width, P), no gate."""
        return self.fuse(torch.cat(list(point_features), dim=1)), None
