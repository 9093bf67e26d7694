"""Device resolution and mixed precision: autocast, fp16 fallback on CPU, grad scaling."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from morse.device import autocast_context, make_grad_scaler, resolve_device, resolve_precision


def test_auto_device_is_cpu_without_cuda() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_fp16_on_cpu_falls_back_to_fp32_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="fp32"):
        assert resolve_precision("fp16", "cpu") == "fp32"
    with pytest.warns(UserWarning):
        scaler = make_grad_scaler("fp16", "cpu")
    assert not scaler.is_enabled()
    layer = nn.Linear(4, 4)
    with pytest.warns(UserWarning), autocast_context("cpu", "fp16"):
        assert layer(torch.randn(2, 4)).dtype == torch.float32


def test_bf16_autocast_on_cpu() -> None:
    layer = nn.Linear(4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with autocast_context("cpu", "bf16"):
            assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
        with autocast_context("cpu", "fp32"):
            assert layer(torch.randn(2, 4)).dtype == torch.float32
        assert not make_grad_scaler("bf16", "cpu").is_enabled()


def test_unknown_precision_is_rejected() -> None:
    with pytest.raises(ValueError, match="precision"):
        autocast_context("cpu", "fp8")
