"""Inference on CPU in bf16: the point layers' weights cast and packed for oneDNN once a pass.

Under bf16 autocast every 1x1 layer casts its fp32 weight to bf16 again at each call (a
layer's weight reaches ``F.linear`` as a view, which autocast does not cache), and a GEMM on a
plain bf16 weight runs slower than on one laid out for oneDNN's kernels. ``packed_layers``
does both once: every ``nn.Linear`` of the renderer gets a ``PackedLinear`` for the duration
of a rendering pass, which ``linear_rows`` and ``split_linear_rows`` use instead of the layer's
own weight. The packed copy is kept between passes while the weight is the same tensor at the
same version (an optimiser step or ``load_state_dict`` bumps it), so predicting slice batch
after slice batch packs once. The arithmetic is autocast's (bf16 inputs and weights, fp32
accumulation, bf16 output), so the outputs match it; a layer fed several blocks multiplies
their concatenation in one GEMM (one rounding, where autocast rounds after each block's
product). Training and export never pack (no autograd through packed weights). Timings are
in docs/explanation/performance.md.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn

from morse.renderer.precision import native_bf16
from morse.renderer.stamps import Stamp

__all__ = ["PackedLinear", "packed_layers", "packing_available", "packed_of"]

_ATTRIBUTE = "_morse_packed"
_CACHE: weakref.WeakKeyDictionary[nn.Linear, dict] = weakref.WeakKeyDictionary()
"""Per layer, ``{(first column, rows hint): (Stamp of weight and bias, PackedLinear)}`` (kept
outside the layer, so that copying or pickling a model never meets a packed tensor)."""


class PackedLinear(NamedTuple):
    """A point layer's weight (C_out, C_in) packed for oneDNN in bf16, and its bf16 bias."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    @classmethod
    def of(cls, layer: nn.Linear, rows_hint: int, first: int = 0) -> PackedLinear:
        """Pack ``layer``'s columns from ``first`` on (all by default) for GEMMs of about
        ``rows_hint`` rows."""
        weight = layer.weight.detach()[:, first:].to(torch.bfloat16)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)
        bias = None if layer.bias is None else layer.bias.detach().to(torch.bfloat16)
        return cls(packed, bias)

    def __call__(self, rows: torch.Tensor, relu: bool = False) -> torch.Tensor:
        """(..., C_in) any dtype -> (..., C_out) bf16, with the ReLU fused when ``relu``."""
        return torch.ops.mkldnn._linear_pointwise(
            rows.to(torch.bfloat16), self.weight, self.bias, "relu" if relu else "none", [], ""
        )


def packing_available(device: torch.device) -> bool:
    """Whether bf16 oneDNN packing runs here: a CPU with native bf16 and the oneDNN ops."""
    if device.type != "cpu" or not native_bf16(device):
        return False
    ops = torch.ops.mkldnn
    return hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")


def packed_of(layer: nn.Linear, first: int = 0) -> PackedLinear | None:
    """The layer's ``PackedLinear`` (of its columns from ``first`` on) inside
    ``packed_layers``, else None."""
    rows_hint = layer.__dict__.get(_ATTRIBUTE)
    return None if rows_hint is None else _cached(layer, rows_hint, first)


@contextlib.contextmanager
def packed_layers(module: nn.Module, rows_hint: int, enabled: bool = True) -> Iterator[None]:
    """Within the block, every ``nn.Linear`` of ``module`` computes with a packed bf16 weight.

    The layers are restored on exit, error or not. Use without autograd only: the packed
    weights are copies, so no gradient would reach the parameters.

    Args:
        module: e.g. a ``MorseRenderer``.
        rows_hint: the rows a GEMM will usually have (the point MLPs' row chunk).
        enabled: False makes the block a no-op.
    """
    if not enabled:
        yield
        return
    if torch.is_grad_enabled():
        raise RuntimeError("packed_layers is for inference: run it under torch.no_grad()")
    layers = [layer for layer in module.modules() if isinstance(layer, nn.Linear)]
    try:
        for layer in layers:
            _cached(layer, rows_hint)
            layer.__dict__[_ATTRIBUTE] = rows_hint
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop(_ATTRIBUTE, None)


def _cached(layer: nn.Linear, rows_hint: int, first: int = 0) -> PackedLinear:
    """The layer's ``PackedLinear``, packed again unless its weight and bias are the same
    tensors at the same versions as when it was packed."""
    packs = _CACHE.setdefault(layer, {})
    stamp, packed = packs.get((first, rows_hint), (None, None))
    if stamp is None or not stamp.matches(layer.weight, layer.bias):
        stamp, packed = Stamp.of(layer.weight, layer.bias), PackedLinear.of(layer, rows_hint, first)
        packs[(first, rows_hint)] = (stamp, packed)
    return packed
