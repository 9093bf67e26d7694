"""2D training data without data.slice_size: slices of any size padded to a common multiple
of 32, image and label alike, the affine kept."""

from __future__ import annotations

import numpy as np

from morse.config import DataConfig
from morse.data.prepare import _training_dataset, pad_slices
from morse.data.volume import Volume


def _volume(shape: tuple[int, ...], case_id: str) -> Volume:
    rng = np.random.default_rng(0)
    label = (rng.random(shape) > 0.5).astype(np.int64)
    affine = np.diag([0.7, 0.9, 3.0, 1.0])
    return Volume(rng.random((2, *shape)).astype(np.float32), label, affine, case_id)


def test_slices_are_padded_at_the_far_ends_by_repeating_the_edge():
    small, large = _volume((20, 28, 3), "small"), _volume((40, 30, 2), "large")
    padded = pad_slices([small, large])
    assert [p.image.shape for p in padded] == [(2, 64, 32, 3), (2, 64, 32, 2)]
    assert [p.label.shape for p in padded] == [(64, 32, 3), (64, 32, 2)]
    first = padded[0]
    np.testing.assert_array_equal(first.image[:, :20, :28], small.image)
    np.testing.assert_array_equal(first.image[:, 20:, :28], np.repeat(small.image[:, 19:20, :],
                                                                      44, axis=1))
    np.testing.assert_array_equal(first.label[:20, 28:], np.repeat(small.label[:, 27:28], 4, 1))
    np.testing.assert_array_equal(first.affine, small.affine)


def test_a_2d_dataset_of_odd_slices_gives_batches_the_backbones_accept():
    cfg = DataConfig(format="nnunet", spatial_dims=2)
    dataset = _training_dataset(cfg, [_volume((20, 28, 3), "a"), _volume((33, 28, 2), "b")])
    sizes = {tuple(dataset[i]["image"].shape) for i in range(len(dataset))}
    assert sizes == {(2, 64, 32)}
    assert {tuple(dataset[i]["label"].shape) for i in range(len(dataset))} == {(1, 64, 32)}


def test_a_set_slice_size_still_resizes_instead():
    cfg = DataConfig(format="nnunet", spatial_dims=2, slice_size=[32, 32])
    dataset = _training_dataset(cfg, [_volume((20, 28, 3), "a")])
    assert tuple(dataset[0]["image"].shape) == (2, 32, 32)
