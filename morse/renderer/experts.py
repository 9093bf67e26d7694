"""Stochastic experts: one expert per feature scale, fused per point by a randomly thinned gate.

Point features travel as rows, (..., C) (the renderer passes (B, P, C)), so every layer is an
``nn.Linear``: one GEMM per layer, which is what a 1x1 ``Conv1d`` over (B, C, P) computes.
Checkpoints written when the layers were 1x1 ``Conv1d`` (weights (C_out, C_in, 1)) still load:
``accept_conv1d_weights`` squeezes those weights as the state dict is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from morse.renderer.packed import packed_of

__all__ = [
    "PointMlp", "StochasticExperts", "ConcatFusion", "accept_conv1d_weights", "drop_experts_mask",
    "linear_rows", "split_linear_rows",
]


def accept_conv1d_weights(module: nn.Module) -> None:
    """Let ``module`` load state dicts whose ``nn.Linear`` weights are 1x1 ``Conv1d`` ones.

    The point layers were 1x1 ``Conv1d`` until they became ``nn.Linear``: the same numbers,
    with a trailing axis of 1 on the weight, (C_out, C_in, 1). A hook run before loading
    squeezes that axis for every ``nn.Linear`` under ``module``; a current state dict passes
    unchanged.
    """
    module.register_load_state_dict_pre_hook(_squeeze_conv1d_weights)


def _squeeze_conv1d_weights(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    for name, layer in module.named_modules(prefix=prefix.rstrip(".")):
        key = f"{name}.weight" if name else "weight"
        weight = state_dict.get(key)
        if isinstance(layer, nn.Linear) and weight is not None and weight.dim() == 3 \
                and weight.shape[-1] == 1:
            state_dict[key] = weight.squeeze(-1)


def linear_rows(layer: nn.Linear, rows: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """``layer`` on rows: (..., C_in) -> (..., C_out), any strides, then a ReLU when ``relu``
    (fused into the GEMM inside ``packed_layers``)."""
    packed = packed_of(layer)
    if packed is not None:
        return packed(rows, relu)
    out = F.linear(rows, layer.weight, layer.bias)
    return out.relu_() if relu else out


def split_linear_rows(
    layer: nn.Linear, blocks: Sequence[torch.Tensor], relu: bool = False,
    lead: torch.Tensor | None = None,
) -> torch.Tensor:
    """``layer`` on the channel concatenation of ``blocks``, without concatenating
    (inside ``packed_layers``: one bf16 concatenation and one packed GEMM), then a ReLU when
    ``relu``.

    ``W [x_1; x_2] = W_1 x_1 + W_2 x_2``: each block (..., c_i) meets its own columns of the
    weight and the products accumulate in place, which saves writing the (..., sum c_i)
    input. A strided block (e.g. sampled features, a transposed view) goes first, through
    ``F.linear``, which reads it as it is; the others are flattened to 2D for ``addmm_``.

    ``lead`` (..., C_out) is the product of the layer's leading columns with an input that
    was multiplied already (the coordinate code of a render grid, ``PositionTable``): the
    blocks then meet the columns after those, and ``lead`` is added before the ReLU.

    Returns (..., C_out).

    >>> layer = nn.Linear(5, 3)
    >>> a, b = torch.randn(2, 4, 2), torch.randn(2, 4, 3)
    >>> torch.allclose(split_linear_rows(layer, [a, b]), layer(torch.cat([a, b], -1)), atol=1e-6)
    True
    >>> lead = a @ layer.weight[:, :2].t()
    >>> torch.allclose(split_linear_rows(layer, [b], lead=lead), layer(torch.cat([a, b], -1)),
    ...                atol=1e-6)
    True
    """
    weight = layer.weight
    widths = [block.shape[-1] for block in blocks]
    first = 0 if lead is None else weight.shape[1] - sum(widths)
    if (sum(widths) != weight.shape[1]) if lead is None else first <= 0:
        raise ValueError(f"blocks of {widths} channels for a layer of {weight.shape[1]} inputs"
                         + ("" if lead is None else " after its leading columns"))
    packed = packed_of(layer, first)
    if packed is not None:
        out = packed(torch.cat([block.to(torch.bfloat16) for block in blocks], -1),
                     relu and lead is None)
        return out if lead is None else (out + lead).relu_() if relu else out + lead
    columns = weight[:, first:].split(widths, dim=1)
    index = next((i for i, block in enumerate(blocks) if not block.is_contiguous()), 0)
    out = F.linear(blocks[index], columns[index], layer.bias)
    flat = out.view(-1, out.shape[-1])
    for other, (block, part) in enumerate(zip(blocks, columns)):
        if other != index:
            # in place, so autocast leaves the dtypes to us: those of the first product
            flat.addmm_(block.reshape(-1, block.shape[-1]).to(flat.dtype), part.t().to(flat.dtype))
    if lead is not None:
        out = out + lead
    return out.relu_() if relu else out


class PointMlp(nn.Sequential):
    """``nn.Linear`` layers with ReLU over point rows: (..., C_in) -> (..., C_out).

    >>> mlp = PointMlp(4, 8, num_layers=2)
    >>> mlp(torch.randn(6, 4)).shape, mlp(torch.randn(1, 6, 4)).shape
    (torch.Size([6, 8]), torch.Size([1, 6, 8]))
    """

    def __init__(self, in_channels: int, out_channels: int, num_layers: int = 2) -> None:
        layers: list[nn.Module] = []
        for index in range(num_layers):
            layers += [nn.Linear(in_channels if index == 0 else out_channels, out_channels)]
            layers += [nn.ReLU(inplace=True)]
        super().__init__(*layers)
        accept_conv1d_weights(self)

    @property
    def entry(self) -> nn.Linear:
        """The first (linear) layer: it commutes with linear interpolation."""
        return self[0]

    def forward(self, rows: torch.Tensor, entered: bool = False) -> torch.Tensor:
        """(..., C_in) -> (..., C_out); ``entered``: ``rows`` (..., C_out) already went
        through ``entry`` (and are overwritten)."""
        layers = list(self)[::2]
        if entered:  # sampled rows are ours to overwrite (grid_sample's grad ignores them)
            rows, layers = rows.relu_(), layers[1:]
        for layer in layers:
            rows = linear_rows(layer, rows, relu=True)
        return rows


def drop_experts_mask(
    num_experts: int, max_dropped: int, device: torch.device | None = None
) -> torch.Tensor:
    """Which experts survive this step: draw r uniformly in {0..max_dropped}, drop r at random.

    Args:
        num_experts: S.
        max_dropped: r_max, clipped to S - 1 so that at least one expert always survives.

    Returns:
        (S,) float mask, 1 for kept experts and 0 for dropped ones.

    >>> mask = drop_experts_mask(5, 4)
    >>> mask.shape, bool(mask.sum() >= 1)
    (torch.Size([5]), True)
    """
    max_dropped = max(0, min(max_dropped, num_experts - 1))
    num_dropped = int(torch.randint(0, max_dropped + 1, (1,)))
    order = torch.randperm(num_experts)
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

    The experts run one after the other: batching their second layers as one ``bmm`` needs
    their inputs stacked, and the stacking copy costs what the batched GEMM saves (timings in
    docs/explanation/performance.md).

    Args:
        in_channels: channels c_s of each scale's features, one expert per entry.
        width: shared expert width (paper: 256).
        max_dropped: r_max; default S - 1.
        renormalize: renormalise surviving gate weights (see above).
        stochastic: drop experts during training; False keeps all (an ablation switch).
        dropout: dropout after the fusion MLP (paper: 0.1).

    >>> moe = StochasticExperts([8, 4], width=16)
    >>> fused, gate = moe([torch.randn(10, 8), torch.randn(10, 4)])
    >>> fused.shape, gate.shape
    (torch.Size([10, 16]), torch.Size([10, 2]))
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
        self.gate = nn.Linear(self.num_experts * width, self.num_experts)
        self.fuse = nn.Sequential(PointMlp(width, width, num_layers=1), nn.Dropout(dropout))
        self.out_channels = width
        accept_conv1d_weights(self)

    @property
    def entries(self) -> list[nn.Linear]:
        """Each expert's first layer (see ``PointMlp.entry``)."""
        return [expert.entry for expert in self.experts]

    def forward(
        self, point_features: Sequence[torch.Tensor], entered: Sequence[bool] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse per-scale point features (experts dropped with the global random state).

        Args:
            point_features: S tensors (..., c_s) (rows, e.g. (B, P, c_s)), in the order of
                ``in_channels``; with ``entered[s]``, (..., width) rows that already went
                through expert s's first layer.
            entered: per scale, whether its features come through the first layer already.

        Returns:
            fused (..., width) and gate weights (..., S) fp32 (zero for dropped experts).
        """
        entered = entered or [False] * self.num_experts
        outputs = [expert(features, done)
                   for expert, features, done in zip(self.experts, point_features, entered)]
        # (..., S), fp32 even under bf16 autocast: the weights of a point sum to 1 exactly
        weights = _softmax_over_experts(split_linear_rows(self.gate, outputs))
        if self.training and self.stochastic and self.num_experts > 1:
            mask = drop_experts_mask(self.num_experts, self.max_dropped, weights.device)
            weights = weights * mask
            if self.renormalize:
                weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        mixing = weights.to(outputs[0].dtype)
        fused = outputs[0] * mixing[..., :1]
        for index in range(1, self.num_experts):
            fused.addcmul_(outputs[index], mixing[..., index : index + 1])
        return self.fuse(fused), weights


def _softmax_over_experts(logits: torch.Tensor) -> torch.Tensor:
    """(..., S) gate logits -> (..., S) fp32 softmax weights (a transposed view).

    Taken along the second-to-last axis of the transpose: the CPU kernel then runs along the
    points, where along S, a handful of values per row, it is an order of magnitude slower.
    The same values up to float rounding.
    """
    return logits.transpose(-1, -2).float().softmax(dim=-2).transpose(-1, -2)


class ConcatFusion(nn.Module):
    """The "experts off" ablation: concatenate all scales' point features, one MLP, no gate.

    >>> fused, gate = ConcatFusion([8, 4], width=16)([torch.randn(5, 8), torch.randn(5, 4)])
    >>> fused.shape, gate is None
    (torch.Size([5, 16]), True)
    """

    def __init__(self, in_channels: Sequence[int], width: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.fuse = nn.Sequential(PointMlp(sum(in_channels), width), nn.Dropout(dropout))
        self.out_channels = width

    @property
    def entries(self) -> list[nn.Linear]:
        """No per-scale first layer (the one layer sees all scales at once)."""
        return []

    def forward(self, point_features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, None]:
        """(S tensors (..., c_s)) -> fused (..., width), no gate."""
        mlp = self.fuse[0]
        first = split_linear_rows(mlp.entry, point_features)
        return self.fuse[1](mlp(first, entered=True)), None
