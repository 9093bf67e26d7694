"""RNG capture/restore, checkpoint-safe storage and the per-rank seeding policy."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from morse.training.rng import (
    capture_rng_state,
    restore_rng_state,
    seed_everything,
)


def _draw() -> tuple[list[float], np.ndarray, torch.Tensor, float]:
    """Draw from every global generator, including numpy's cached Gaussian path."""
    return (
        [random.random() for _ in range(5)] + [random.gauss(0.0, 1.0)],
        np.concatenate([np.random.rand(5), np.random.randn(3)]),
        torch.rand(5),
        float(torch.randn(3).sum()),
    )


def _assert_same_draws(first: tuple, second: tuple) -> None:
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])
    assert torch.equal(first[2], second[2])
    assert first[3] == second[3]


def test_restore_replays_the_same_numbers() -> None:
    seed_everything(7)
    np.random.randn(1)  # numpy draws Gaussians in pairs: one is now cached
    random.gauss(0.0, 1.0)  # so does python's random.gauss
    state = capture_rng_state()
    assert state["numpy"]["has_gauss"] == 1 and state["python"]["gauss_next"] is not None
    first = _draw()
    _draw()  # move further on
    restore_rng_state(state)
    _assert_same_draws(first, _draw())


def test_state_survives_weights_only_round_trip(tmp_path) -> None:
    seed_everything(11)
    random.gauss(0.0, 1.0)  # python keeps gauss_next as a float
    np.random.randn(3)  # numpy keeps a cached Gaussian
    state = capture_rng_state()
    expected = _draw()
    path = tmp_path / "rng.pt"
    torch.save({"rng": state}, path)
    loaded = torch.load(path, weights_only=True)["rng"]
    seed_everything(999)
    restore_rng_state(loaded)
    _assert_same_draws(expected, _draw())


def test_state_holds_only_checkpoint_safe_types() -> None:
    state = capture_rng_state()
    assert isinstance(state["numpy"]["keys"], torch.Tensor)
    assert all(type(v) is int for v in state["python"]["state"])
    assert isinstance(state["torch"], torch.Tensor)
    assert isinstance(state["cuda"], list)


def test_restore_rejects_a_foreign_dict() -> None:
    with pytest.raises(ValueError, match="missing"):
        restore_rng_state({"torch": torch.get_rng_state()})


def test_seed_everything_gives_per_rank_streams() -> None:
    seed_everything(5, rank=0)
    draws0 = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(5, rank=1)
    draws1 = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert all(a != b for a, b in zip(draws0, draws1, strict=True))
    seed_everything(5, rank=0)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws0
