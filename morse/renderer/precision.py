"""The precision of the point MLPs: bf16 autocast where the device computes bf16 natively."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["native_bf16", "point_precision"]


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes in bf16 natively (CUDA: Ampere on; CPU: AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def point_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for the point MLPs when ``precision`` asks for it (``auto``: where the
    device has native bf16); a no-op for fp32 (an outer autocast then still applies)."""
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
