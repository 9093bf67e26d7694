"""Normalisation schemes, their choice per channel, and the preprocessing record."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from morse.config import load_config
from morse.data import Volume
from morse.data.intensity import (
    apply_intensity,
    check_record,
    foreground_stats,
    make_record,
    normalize_intensity,
    raw_to_network,
    resolve_intensity,
)
from morse.data.prepare import load_eval_volumes, prepare_data
from morse.errors import DataError


def ct_volume(seed: int, organ_hu: float) -> Volume:
    """A CT-like volume: air, soft tissue around 40 HU with a 0 HU block, a labelled organ."""
    rng = np.random.default_rng(seed)
    image = np.full((1, 16, 16, 4), -1000.0, np.float32)
    image[0, 2:14, 2:14] = rng.normal(40.0, 20.0, (12, 12, 4))
    image[0, 4:8, 4:8] = 0.0  # water-like tissue at exactly 0 HU
    label = np.zeros((16, 16, 4), np.int64)
    label[4:12, 4:12] = 1
    image[0][label > 0] += organ_hu
    return Volume(image, label, case_id=f"ct{seed}")


def test_ct_percentile_normalises_0_hu_voxels_like_their_neighbours():
    volume = ct_volume(0, 0.0)
    (step,) = resolve_intensity("ct-percentile", ["CT"], lambda: [volume])
    out = apply_intensity(volume.image, [step])[0]
    expected = (np.clip(0.0, step["lower"], step["upper"]) - step["mean"]) / step["std"]
    np.testing.assert_allclose(out[4:8, 4:8], expected, rtol=1e-5)
    assert abs(expected) > 0.1  # the 0 HU block moved with its neighbours
    # z-score over nonzero voxels (the old 3D default) leaves the 0 HU block at 0
    assert np.all(normalize_intensity(volume.image, "zscore")[0, 4:8, 4:8] == 0)


def test_ct_percentile_uses_dataset_foreground_statistics_not_each_volumes():
    volumes = [ct_volume(0, 0.0), ct_volume(1, 200.0)]
    step = resolve_intensity("ct-percentile", ["CT"], lambda: volumes)[0]
    organ = np.concatenate([v.image[0][v.label > 0] for v in volumes])
    assert step["mean"] == pytest.approx(organ.mean(), rel=1e-4)
    assert step["std"] == pytest.approx(organ.std(), rel=1e-4)
    assert step["lower"] == pytest.approx(np.percentile(organ, 0.5), rel=1e-4)
    assert step["upper"] == pytest.approx(np.percentile(organ, 99.5), rel=1e-4)
    first, second = (apply_intensity(v.image, [step])[0][v.label > 0] for v in volumes)
    assert second.mean() - first.mean() > 1.0  # the brighter organ stays brighter


def test_auto_picks_ct_scheme_by_channel_name_and_zscore_otherwise():
    volume = Volume(np.stack([ct_volume(0, 0).image[0]] * 2), ct_volume(0, 0).label)
    steps = resolve_intensity("auto", ["CT", "T2"], lambda: [volume])
    assert steps[0]["scheme"] == "ct-percentile" and steps[1] == {"scheme": "zscore"}
    with pytest.raises(DataError, match="data.normalize 'histogram' is unknown"):
        resolve_intensity("histogram", ["CT"], lambda: [volume])


def write_two_channel_dataset(root: Path) -> Path:
    """An nnU-Net folder with a CT channel and an MR channel (3 cases)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for index in range(3):
        volume = ct_volume(index, 100.0 * index)
        nib.save(nib.Nifti1Image(volume.image[0], np.eye(4)),
                 root / "imagesTr" / f"c{index}_0000.nii.gz")
        nib.save(nib.Nifti1Image(volume.image[0] / 100 + 5, np.eye(4)),
                 root / "imagesTr" / f"c{index}_0001.nii.gz")
        nib.save(nib.Nifti1Image(volume.label.astype(np.uint8), np.eye(4)),
                 root / "labelsTr" / f"c{index}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "T2"}, "labels": {"background": 0, "organ": 1},
        "numTraining": 3, "file_ending": ".nii.gz",
    }))
    return root


def test_auto_reads_channel_names_from_dataset_json_and_records_the_statistics(tmp_path):
    root = write_two_channel_dataset(tmp_path / "Dataset003")
    cfg = load_config("unet3d", [f"data.root={root}", "data.patch_size=[16,16,4]",
                                 "data.split_fractions=[0.34,0.33,0.33]"])
    assert cfg.data.normalize == "auto"
    data = prepare_data(cfg.data)
    ct, mr = data.preprocessing["intensity"]
    assert ct["scheme"] == "ct-percentile" and mr == {"scheme": "zscore"}
    (train_case,) = data.split.train
    train = ct_volume(int(train_case[1:]), 100.0 * int(train_case[1:]))
    assert ct["mean"] == pytest.approx(train.image[0][train.label > 0].mean(), rel=1e-4)
    (test,) = load_eval_volumes(cfg.data, "test", data.preprocessing)
    raw = ct_volume(int(test.case_id[1:]), 100.0 * int(test.case_id[1:])).image[0]
    expected = (np.clip(raw, ct["lower"], ct["upper"]) - ct["mean"]) / ct["std"]
    np.testing.assert_allclose(test.image[0], expected, rtol=1e-4, atol=1e-4)


def test_raw_to_network_applies_axis_order_then_file_recipe_then_training_steps():
    raw = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4) * 50 - 300
    record = make_record([{"scheme": "none"}],
                         {"scheme": "ct", "clip": [-125, 275], "scale": [0, 1]}, (1, 0, 2))
    out = raw_to_network(raw, record)
    assert out.shape == (1, 3, 2, 4)
    expected = (np.clip(np.transpose(raw[0], (1, 0, 2)), -125, 275) + 125) / 400
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)


def test_a_missing_or_unknown_record_is_refused_with_the_fix():
    with pytest.raises(DataError, match="ckpt.pt: no preprocessing record .* retrain"):
        check_record(None, "ckpt.pt")
    record = make_record([{"scheme": "histogram-match"}])
    with pytest.raises(DataError, match="cannot apply"):
        check_record(record, "ckpt.pt")


def test_foreground_stats_name_the_case_when_nothing_is_labelled():
    empty = Volume(np.ones((1, 4, 4, 2)), np.zeros((4, 4, 2)), source="empty.nii.gz")
    with pytest.raises(DataError, match="empty.nii.gz: no labelled"):
        foreground_stats([empty], 0)
