"""Device resolution and mixed precision: autocast, fp16 fallback on CPU, grad scaling."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from morse.device import (
    MAX_DEFAULT_THREADS,
    autocast_context,
    make_grad_scaler,
    resolve_device,
    resolve_precision,
    set_threads,
)


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


def _record_threads(monkeypatch, default: int = 4) -> list[int]:
    """torch's thread calls, recorded instead of applied, with ``default`` threads in use."""
    calls: list[int] = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: calls[-1] if calls else default)
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    return calls


def test_set_threads_applies_the_number_asked_for(monkeypatch) -> None:
    calls = _record_threads(monkeypatch)
    assert set_threads(1) == 1
    assert calls == [1]


def test_set_threads_default_caps_torchs_default_unless_omp_num_threads_is_set(
    monkeypatch,
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    calls = _record_threads(monkeypatch, default=64)
    assert set_threads(None) == MAX_DEFAULT_THREADS
    assert calls == [MAX_DEFAULT_THREADS]
    monkeypatch.setenv("OMP_NUM_THREADS", "32")
    calls = _record_threads(monkeypatch, default=32)
    assert set_threads(None) == 32 and calls == []


def test_threads_key_is_checked() -> None:
    from morse.config import TrainConfig
    from morse.errors import ConfigError

    with pytest.raises(ConfigError, match="threads must be >= 1 or null, got 0"):
        TrainConfig(threads=0)
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        set_threads(0)


def test_dataloader_workers_run_one_thread_each() -> None:
    from torch.utils.data import DataLoader, Dataset

    class Threads(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> int:
            return torch.get_num_threads()

    assert [int(n) for n in DataLoader(Threads(), num_workers=2)] == [1, 1]
