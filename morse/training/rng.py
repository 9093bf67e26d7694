"""Random-number state: seeding, capture and restore, in a checkpoint-safe form.

MORSE draws random numbers in four places: Python's ``random`` (augmentation
helpers), numpy's global RNG (MONAI transforms), torch's CPU generator and the
CUDA generators (stochastic expert gating, point sampling). Resuming a run
bit-for-bit needs all of them back where they were.

Everything :func:`capture_rng_state` returns is built from tensors, ints, floats,
strings, ``None``, lists and dicts, so it is stored inside a checkpoint and loaded
back with ``torch.load(weights_only=True)``; numpy's ``(str, ndarray, int, int,
float)`` tuple and Python's ``(int, tuple[int, ...], float | None)`` tuple are
converted on the way in and rebuilt on the way out.

Seeding policy (:func:`seed_everything`): the global generators get ``seed + rank``
so every rank draws its own expert masks and sample points. Data order does not come from
these generators: batches are a pure function of (seed, step), see ``morse.training.sampling``.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch

__all__ = [
    "capture_rng_state",
    "restore_rng_state",
    "seed_everything",
]

_REQUIRED_KEYS = ("python", "numpy", "torch")


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) with ``seed + rank``."""
    if seed < 0 or rank < 0:
        raise ValueError(f"seed and rank must be >= 0, got seed={seed}, rank={rank}")
    stream = seed + rank
    random.seed(stream)
    np.random.seed(stream % 2**32)
    torch.manual_seed(stream)  # also seeds every CUDA device


def capture_rng_state() -> dict[str, Any]:
    """Snapshot every global RNG as a dict that loads with ``weights_only=True``.

    Keys: ``python``, ``numpy``, ``torch`` (CPU ByteTensor) and ``cuda`` (one
    ByteTensor per visible CUDA device; empty list without CUDA).
    """
    return {
        "python": _python_state(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the generators saved by :func:`capture_rng_state`.

    CUDA states are restored for the devices present in both the snapshot and
    this process; a mismatch (resuming a GPU run on CPU, or on fewer devices)
    warns instead of failing, since the CPU-side streams are still exact.
    """
    missing = [key for key in _REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(f"RNG state is missing {missing}; expected a capture_rng_state() dict")
    _set_python_state(state["python"])
    _set_numpy_state(state["numpy"])
    torch.set_rng_state(_as_byte_tensor(state["torch"]))
    _set_cuda_states(list(state.get("cuda", [])))


def _python_state() -> dict[str, Any]:
    version, internal, gauss_next = random.getstate()
    return {"version": int(version), "state": [int(v) for v in internal], "gauss_next": gauss_next}


def _set_python_state(state: dict[str, Any]) -> None:
    random.setstate((int(state["version"]), tuple(int(v) for v in state["state"]),
                     state["gauss_next"]))


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "bit_generator": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def _set_numpy_state(state: dict[str, Any]) -> None:
    keys = torch.as_tensor(state["keys"]).cpu().numpy().astype(np.uint32)
    np.random.set_state((state["bit_generator"], keys, int(state["pos"]),
                         int(state["has_gauss"]), float(state["cached_gaussian"])))


def _set_cuda_states(states: list[torch.Tensor]) -> None:
    if not states:
        return
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available != len(states):
        warnings.warn(
            f"checkpoint holds RNG states for {len(states)} CUDA device(s), this process sees "
            f"{available}; restoring the first {min(available, len(states))}",
            stacklevel=3,
        )
    for index, device_state in enumerate(states[:available]):
        torch.cuda.set_rng_state(_as_byte_tensor(device_state), device=index)


def _as_byte_tensor(state: torch.Tensor) -> torch.Tensor:
    """RNG setters want a CPU uint8 tensor, whatever map_location the checkpoint used."""
    return torch.as_tensor(state).detach().to(device="cpu", dtype=torch.uint8)
