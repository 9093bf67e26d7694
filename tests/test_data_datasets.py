"""Intensity normalisation, SliceDataset and PatchDataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from morse.data import PatchDataset, SliceDataset, Volume
from morse.data.intensity import normalize_intensity
from morse.errors import DataError


def make_volume(case_id: str = "a", shape=(12, 10, 6), channels: int = 1, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    image = rng.random((channels, *shape)).astype(np.float32) + 1.0
    label = np.zeros(shape, np.int64)
    label[3:8, 2:6, 1:3] = 1
    label[5:7, 5:8, 2] = 2
    return Volume(image, label, np.eye(4), case_id)


# ----------------------------------------------------------------------------- normalisation


def test_zscore_per_channel_over_nonzero():
    image = np.zeros((2, 4, 4, 4), np.float32)
    image[0, :2] = np.random.default_rng(0).normal(50.0, 10.0, (2, 4, 4))
    image[1] = np.random.default_rng(1).normal(-3.0, 0.5, (4, 4, 4))
    out = normalize_intensity(image, "zscore")
    head = out[0, :2]
    assert abs(head.mean()) < 1e-5 and head.std() == pytest.approx(1.0, abs=1e-4)
    assert np.all(out[0, 2:] == 0)
    assert abs(out[1].mean()) < 1e-5 and out[1].std() == pytest.approx(1.0, abs=1e-4)
    assert out.dtype == np.float32 and image[0, 0, 0, 0] != out[0, 0, 0, 0]  # input untouched


def test_ct_window_and_none():
    hu = np.array([[[-2000.0, -125.0, 75.0, 275.0, 1000.0]]])
    np.testing.assert_allclose(normalize_intensity(hu, "ct"), [[[0.0, 0.0, 0.5, 1.0, 1.0]]])
    same = normalize_intensity(hu, "none")
    np.testing.assert_array_equal(same, hu)
    assert same.dtype == np.float32
    with pytest.raises(ValueError, match="unknown intensity scheme"):
        normalize_intensity(hu, "histogram")


# ----------------------------------------------------------------------------- slices


def test_slice_dataset_items():
    vols = [make_volume("a"), make_volume("b", shape=(12, 10, 4), channels=1, seed=1)]
    ds = SliceDataset(vols)
    assert len(ds) == 10
    item = ds[7]
    assert item["case_id"] == "b" and item["slice"] == 1
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 12, 10)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (1, 12, 10)
    np.testing.assert_array_equal(item["image"].numpy(), vols[1].image[..., 1])
    np.testing.assert_array_equal(item["label"][0].numpy(), vols[1].label[..., 1])


def test_slice_dataset_resize_keeps_label_values():
    ds = SliceDataset([make_volume(channels=2)], slice_size=(20, 16), normalize="zscore")
    item = ds[2]
    assert item["image"].shape == (2, 20, 16) and item["label"].shape == (1, 20, 16)
    assert set(item["label"].unique().tolist()) == {0, 1, 2}


def test_slice_dataset_foreground_only():
    vol = make_volume(shape=(12, 10, 20))
    vol.label[..., 10] = 1  # foreground slices: 1, 2, 10
    only = SliceDataset([vol], foreground_only=True)
    assert [it["slice"] for it in (only[i] for i in range(len(only)))] == [1, 2, 10]
    some = SliceDataset([vol], foreground_only=True, empty_fraction=0.5, seed=3)
    assert len(some) == 3 + round(0.5 * 17)
    again = SliceDataset([vol], foreground_only=True, empty_fraction=0.5, seed=3)
    assert some.index == again.index


def test_slice_augmentation_is_seeded_and_label_stays_nearest():
    vol = make_volume(shape=(16, 16, 6))
    a = SliceDataset([vol], augment=True, seed=5)
    b = SliceDataset([vol], augment=True, seed=5)
    items_a = [a[i] for i in range(len(a))]
    items_b = [b[i] for i in reversed(range(len(b)))][::-1]  # access order does not matter
    for x, y in zip(items_a, items_b, strict=True):
        torch.testing.assert_close(x["image"], y["image"])
        assert torch.equal(x["label"], y["label"])
    b.set_epoch(1)
    assert any(not torch.equal(x["image"], b[i]["image"]) for i, x in enumerate(items_a))
    plain = SliceDataset([vol])
    assert any(not torch.equal(x["image"], plain[i]["image"]) for i, x in enumerate(items_a))
    for x in items_a:
        assert x["image"].shape == (1, 16, 16) and x["label"].dtype == torch.int64
        assert set(x["label"].unique().tolist()) <= {0, 1, 2}


def test_slice_dataloader_workers_match_single_process():
    ds = SliceDataset([make_volume(shape=(16, 16, 4))], augment=True, seed=9)
    single = [b["image"] for b in DataLoader(ds, batch_size=2, num_workers=0)]
    multi = [b["image"] for b in DataLoader(ds, batch_size=2, num_workers=2)]
    for x, y in zip(single, multi, strict=True):
        torch.testing.assert_close(x, y)


def test_slice_dataset_rejects_mixed_labels_and_empty():
    unlabelled = Volume(np.zeros((1, 4, 4, 2)), None, case_id="u")
    with pytest.raises(DataError, match=r"\['u'\] have no label"):
        SliceDataset([make_volume(), unlabelled])
    assert "label" not in SliceDataset([unlabelled])[0]
    with pytest.raises(DataError, match="no volumes"):
        SliceDataset([])


# ----------------------------------------------------------------------------- patches


def test_patch_dataset_shapes_and_padding():
    vols = [make_volume("a", shape=(12, 10, 6)), make_volume("b", shape=(20, 20, 20), seed=2)]
    ds = PatchDataset(vols, patch_size=(8, 8, 8), samples_per_volume=3, seed=0)
    assert len(ds) == 6
    item = ds[1]  # volume a, padded to 12 x 10 x 8
    assert item["case_id"] == "a"
    assert item["image"].shape == (1, 8, 8, 8) and item["image"].dtype == torch.float32
    assert item["label"].shape == (1, 8, 8, 8) and item["label"].dtype == torch.int64
    assert ds[4]["case_id"] == "b"


def test_patch_dataset_foreground_weighting():
    vol = make_volume(shape=(32, 32, 32))
    vol.label[:] = 0
    vol.label[24:27, 24:27, 24:27] = 1
    pos = PatchDataset([vol], (8, 8, 8), samples_per_volume=8, pos_ratio=1.0, seed=1)
    assert all(pos[i]["label"].sum() > 0 for i in range(len(pos)))
    neg = PatchDataset([vol], (8, 8, 8), samples_per_volume=8, pos_ratio=0.0, seed=1)
    assert sum(int(neg[i]["label"].sum() > 0) for i in range(len(neg))) <= 2


def test_patch_dataset_is_reproducible():
    vol = make_volume(shape=(24, 24, 24))
    a = PatchDataset([vol], (8, 8, 8), samples_per_volume=4, seed=7, augment=True)
    b = PatchDataset([vol], (8, 8, 8), samples_per_volume=4, seed=7, augment=True)
    for i in (3, 0, 2, 1):
        torch.testing.assert_close(a[i]["image"], b[i]["image"])
    b.set_epoch(1)
    assert any(not torch.equal(a[i]["image"], b[i]["image"]) for i in range(4))


def test_patch_dataset_errors():
    with pytest.raises(DataError, match="patch sampling needs labels"):
        PatchDataset([Volume(np.zeros((1, 4, 4, 4)), None)], (4, 4, 4))
    with pytest.raises(DataError, match="one size per spatial axis"):
        PatchDataset([make_volume()], (4, 4))
    with pytest.raises(ValueError, match="pos_ratio"):
        PatchDataset([make_volume()], (4, 4, 4), pos_ratio=1.5)
