"""The precision of the point MLPs: bf16 autocast where the device computes bf16 natively."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["native_bf16", "point_precision", "uses_bf16"]


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


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``render_precision`` runs the point MLPs in bf16 on this device (``auto``:
    where the device has native bf16)."""
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def point_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for the point MLPs when ``uses_bf16``; a no-op for fp32 (an outer
    autocast then still applies)."""
    if uses_bf16(precision, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
