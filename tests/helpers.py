"""Helpers shared by the test modules: small models, tiny datasets on disk, config files.

Fixtures built from these live in ``tests/conftest.py``; test modules import plain helpers from
here and never from one another.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from monai.networks.layers.factories import Conv
from torch import nn

TINY = [
    "model.backbone_options={width: 0.25}", "model.expert_width=16", "model.head_width=16",
    "model.train_points=64", "model.render_points=64", "model.num_frequencies=8",
    "train.batch_size=2", "train.log_every=1", "data.num_workers=0",
]
"""Command-line overrides that shrink a run to seconds on a CPU."""


class ToyBackbone(nn.Module):
    """A few convolutions giving logits and three feature maps at strides 4, 2, 1."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 3) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.feature_channels = [12, 8, 6]
        self.feature_strides = [4, 2, 1]
        self.stems = nn.ModuleList(
            conv(in_channels, channels, 3, padding=1) for channels in self.feature_channels
        )
        self.out = conv(6, num_classes, 1)

    def forward(self, image: torch.Tensor):
        features = []
        for stem, stride in zip(self.stems, self.feature_strides):
            pool = F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d
            pooled = pool(image, stride)
            features.append(torch.relu(stem(pooled)))
        return self.out(features[-1]), features


def small_morse(spatial_dims: int = 2, num_classes: int = 3, **options):
    """A small Morse on the toy backbone (narrow renderer) for fast tests."""
    from morse import Morse

    sizes = dict(expert_width=16, head_width=16, num_frequencies=8, train_points=64,
                 render_points=32)
    sizes.update(options)
    return Morse(ToyBackbone(spatial_dims, 1, num_classes), num_classes, spatial_dims, **sizes)


def oblique_affine(spacing=(0.7, 0.9, 3.0)) -> np.ndarray:
    """A voxel-to-world affine rotated 20 degrees about z, with the given spacing."""
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = (-10.0, 5.0, 2.5)
    return affine


def make_dataset(root: Path, cases: int = 5, shape=(32, 32, 6)) -> Path:
    """An nnU-Net v2 folder: discs (label 1) on noise, one channel, oblique anisotropic grid."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for index in range(cases):
        cy, cx = rng.uniform(10, 22, 2)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < 36).astype(np.uint8)
        label = np.repeat(disc[..., None], shape[2], axis=2)
        image = (label * 2.0 + rng.normal(0, 0.3, shape)).astype(np.float32)
        affine = oblique_affine()
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case{index}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case{index}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "disc": 1},
        "numTraining": cases, "file_ending": ".nii.gz",
    }))
    return root


def add_test_set(root: Path, cases: tuple[str, ...]) -> Path:
    """Move cases of imagesTr/labelsTr to imagesTs/labelsTs (the user's held-out set)."""
    for folder in ("imagesTs", "labelsTs"):
        (root / folder).mkdir()
    for case in cases:
        shutil.move(root / "imagesTr" / f"{case}_0000.nii.gz", root / "imagesTs")
        shutil.move(root / "labelsTr" / f"{case}.nii.gz", root / "labelsTs")
    spec = json.loads((root / "dataset.json").read_text())
    spec["numTraining"] -= len(cases)
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def write_config(path: Path, data_root: Path, iterations: int = 2, **train) -> Path:
    """A YAML config training 2D on ``data_root`` (nnU-Net layout), split 60/20/20."""
    cfg = {
        "name": "tiny",
        "data": {"format": "nnunet", "root": str(data_root), "spatial_dims": 2,
                 "split_fractions": [0.6, 0.2, 0.2]},
        "train": {"iterations": iterations, "val_every": iterations, "checkpoint_every": 1,
                  **train},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_h5(path: Path, **arrays: np.ndarray) -> Path:
    """An HDF5 file holding one dataset per keyword."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


def ramp(shape: tuple[int, ...]) -> np.ndarray:
    """0, 1, 2, ... in float32, in ``shape``: every voxel tells where it came from."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def make_synapse(root: Path) -> Path:
    """TransUNet's Synapse layout: three 8 x 6 training slices of two cases, one test volume."""
    (root / "train_npz").mkdir(parents=True)
    names = ["case0005_slice000", "case0005_slice001", "case0006_slice000"]
    for i, name in enumerate(names):
        label = np.zeros((8, 6), np.float32)
        label[2:4, 1:3] = i + 1
        np.savez(root / "train_npz" / f"{name}.npz", image=ramp((8, 6)) + i, label=label)
    volume = ramp((3, 8, 6))  # (D, H, W)
    label = np.zeros((3, 8, 6), np.uint8)
    label[1, 2:5, 2:4] = 8
    write_h5(root / "test_vol_h5" / "case0001.npy.h5", image=volume, label=label)
    lists = root / "lists" / "lists_Synapse"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(names) + "\n")
    (lists / "test_vol.txt").write_text("case0001\n")
    return root


def make_mni_tissue(root: Path) -> Path:
    """A nilearn-like data folder: a 16 x 6 x 64 head at 1 mm (x = 0 at index 8) whose T1 and
    grey/white-matter maps (uint8, 255 = 1) hold both tissues on every brain slice."""
    root.mkdir(parents=True)
    gm = np.zeros((16, 6, 64), np.uint8)
    wm = np.zeros((16, 6, 64), np.uint8)
    gm[2:14, :, 4:60] = 230
    wm[5:11, :, 4:60] = 200
    gm[5:11, :, 4:60] = 40
    t1 = (gm > 0).astype(np.uint8) * 80 + (wm > 0).astype(np.uint8) * 60
    affine = np.eye(4)
    affine[:3, 3] = (-8.0, -3.0, -32.0)
    for kind, array in (("t1", t1), ("gm", gm), ("wm", wm)):
        name = f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
        nib.save(nib.Nifti1Image(array, affine), str(root / name))
    return root


def train_padded_2d_run(tmp: Path, dataset: str) -> Path:
    """A tiny 2D run of the ``nnunet_2d`` preset, on padded slices (no slice_size) of three
    32 x 32 x 6 scans in ``tmp/dataset``; its folder ``tmp/run``."""
    from morse.cli.main import main

    data = make_dataset(tmp / dataset, cases=3)
    assert main(["train", "nnunet_2d", f"data.root={data}", *TINY, "train.iterations=2",
                 "data.split_fractions=[0.34,0.33,0.33]", "-o", str(tmp / "run")]) == 0
    return tmp / "run"
