"""Where and in what precision the network runs: one device resolver, CPU threads, autocast,
grad scaling."""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Literal

import torch

from morse.errors import ConfigError

__all__ = [
    "Precision", "PRECISIONS", "resolve_device", "resolve_precision", "autocast_context",
    "make_grad_scaler", "set_threads", "MAX_DEFAULT_THREADS",
]

MAX_DEFAULT_THREADS = 8
"""The most CPU threads a run takes unasked: small 2D and 3D networks gain little past it."""

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_device(name: str) -> torch.device:
    """"auto" picks CUDA when present, else the CPU; a device this machine lacks is refused in
    one line (a CUDA device on a CPU build of torch, a GPU index past the last one).

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("banana")
    Traceback (most recent call last):
    ...
    morse.errors.ConfigError: device 'banana' is not a device; use auto, cpu, cuda or cuda:N
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device {name!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r}: MORSE runs on cpu or cuda; use auto, cpu, cuda or "
                          "cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: this torch sees no CUDA GPU (a CPU build, or no "
                          "driver); use cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} "
                          "CUDA GPU(s); use cuda:0 .. cuda:N-1")
    return device


def set_threads(threads: int | None) -> int:
    """Set torch's CPU threads for this process and return the number in use.

    Args:
        threads: the number to use; None keeps what ``OMP_NUM_THREADS`` asks for, else torch's
            default (one per physical core) capped at :data:`MAX_DEFAULT_THREADS`.

    DataLoader workers are separate processes; torch gives each of them one thread.
    On a machine other work keeps busy, fewer threads than cores is faster: see
    docs/explanation/performance.md, "CPU threads".
    """
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return torch.get_num_threads()
        threads = min(torch.get_num_threads(), MAX_DEFAULT_THREADS)
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


def resolve_precision(precision: str, device: str | torch.device) -> Precision:
    """The precision actually used: fp16 on CPU falls back to fp32 (with a warning)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and torch.device(device).type != "cuda":
        warnings.warn("fp16 autocast needs a GPU; running in fp32 on CPU (bf16 works on CPU)",
                      stacklevel=3)
        return "fp32"
    return precision  # type: ignore[return-value]


def autocast_context(
    device: str | torch.device, precision: str = "fp32"
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for bf16/fp16, a null context for fp32."""
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def make_grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler:
    """A GradScaler enabled only for fp16 on CUDA; disabled it passes losses through.

    Use it the same way in every precision: ``scaler.scale(loss).backward();
    scaler.step(optimizer); scaler.update()``.
    """
    device_type = torch.device(device).type
    enabled = resolve_precision(precision, device) == "fp16"
    return torch.amp.GradScaler(device_type, enabled=enabled)
