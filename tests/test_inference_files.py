"""`morse predict` on raw NIfTI scans: the checkpoint's preprocessing record reaches the network."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

import morse.inference.files as files
from morse.cli.main import main
from morse.data.files import group_channel_files
from morse.errors import DataError
from morse.io.checkpoint import load_checkpoint, save_checkpoint

TINY = [
    "model.backbone_options={width: 0.25}", "model.expert_width=16", "model.head_width=16",
    "model.train_points=64", "model.render_points=64", "model.num_frequencies=8",
    "train.batch_size=2", "train.log_every=1", "train.iterations=2", "train.val_every=2",
]


def write_synapse(root: Path) -> Path:
    """TransUNet's layout, 32 x 32 slices already windowed to [0, 1], three training cases."""
    rng = np.random.default_rng(0)
    (root / "train_npz").mkdir(parents=True)
    (root / "test_vol_h5").mkdir()
    names = [f"case000{c}_slice00{k}" for c in (5, 6, 7) for k in range(2)]
    for name in names:
        label = np.zeros((32, 32), np.float32)
        label[8:20, 10:22] = 5
        np.savez(root / "train_npz" / f"{name}.npz", image=rng.random((32, 32), np.float32),
                 label=label)
    with h5py.File(root / "test_vol_h5" / "case0001.npy.h5", "w") as f:
        f.create_dataset("image", data=rng.random((2, 32, 32), np.float32))
        f.create_dataset("label", data=np.zeros((2, 32, 32), np.uint8))
    lists = root / "lists" / "lists_Synapse"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(names) + "\n")
    (lists / "test_vol.txt").write_text("case0001\n")
    return root


@pytest.fixture(scope="module")
def synapse_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("synapse")
    root = write_synapse(tmp / "Synapse")
    run = tmp / "run"
    overrides = [f"data.root={root}", "data.slice_size=null", *TINY]
    assert main(["train", "synapse_unet2d", *overrides, "-o", str(run)]) == 0
    return run


def test_checkpoint_records_channels_and_transunets_raw_ct_recipe(synapse_run):
    state = load_checkpoint(synapse_run / "last.pt")
    assert state["in_channels"] == 1
    record = state["preprocessing"]
    assert record["file_intensity"] == {"scheme": "ct", "clip": [-125.0, 275.0],
                                        "scale": [0.0, 1.0]}
    assert record["intensity"] == [{"scheme": "none"}] and record["axis_order"] == [1, 0, 2]


def test_predict_feeds_the_network_clipped_and_scaled_hu_in_training_axis_order(
    synapse_run, tmp_path, monkeypatch
):
    hu = np.random.default_rng(1).uniform(-1000, 1500, (32, 32, 3)).astype(np.float32)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(hu, np.diag([0.8, 0.7, 3.0, 1.0])), scan)
    seen: list[torch.Tensor] = []
    original = files.load_run

    def load_and_hook(*args, **kwargs):
        run = original(*args, **kwargs)
        run.model.backbone.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
        return run

    monkeypatch.setattr(files, "load_run", load_and_hook)
    (out,) = files.predict_files(synapse_run, [scan], tmp_path / "pred", device="cpu")
    network_input = torch.cat(seen)[:, 0].numpy()  # (slices, H, W)
    expected = (np.clip(np.transpose(hu, (1, 0, 2)), -125, 275) + 125) / 400
    np.testing.assert_allclose(network_input, np.moveaxis(expected, -1, 0), atol=1e-6)
    assert nib.load(out).shape == hu.shape


def test_predict_refuses_a_checkpoint_without_a_preprocessing_record(synapse_run, tmp_path):
    state = load_checkpoint(synapse_run / "last.pt")
    del state["preprocessing"]
    old = save_checkpoint(tmp_path / "old.pt", state)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 2), np.float32), np.eye(4)), scan)
    with pytest.raises(DataError, match=rf"checkpoint {old}: no preprocessing record .*retrain"):
        files.predict_files(old, [scan], tmp_path / "pred", device="cpu")


def test_training_prints_and_saves_the_split(synapse_run):
    split = yaml.safe_load((synapse_run / "split.json").read_text())
    assert split["test"] == ["case0001"] and len(split["train"]) + len(split["val"]) == 3


def test_channel_files_with_a_gap_are_refused_naming_the_missing_file():
    with pytest.raises(DataError, match=r"a_0001.nii.gz: channel file missing for case a"):
        group_channel_files([Path("a_0000.nii.gz"), Path("a_0002.nii.gz")])
    with pytest.raises(DataError, match=r"a_0000.nii.gz: channel file missing"):
        group_channel_files([Path("a_0001.nii.gz")])
    with pytest.raises(DataError, match="channel 0 of case a is given twice"):
        group_channel_files([Path("a_0000.nii.gz"), Path("x/a_0000.nii.gz")])
