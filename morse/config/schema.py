"""The run configuration's sections: typed dataclasses, one documented field per YAML key.

``Config`` holds a ``data``, ``model``, ``loss``, ``train`` and ``eval`` section; the
``model`` section inherits the renderer's keys from :class:`RendererConfig`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from morse.config.choices import (
    BACKBONES,
    DICE_POOLING,
    FORMATS,
    INTENSITY_SCHEMES,
    POINT_WEIGHT_SCHEDULES,
    TRAIN_PRECISIONS,
)
from morse.config.renderer import RendererConfig
from morse.config.rules import Checked, rule

__all__ = ["Config", "DataConfig", "ModelConfig", "LossConfig", "TrainConfig", "EvalConfig"]


def _fractions(value: list[float]) -> bool:
    return len(value) == 3 and min(value) >= 0 and abs(sum(value) - 1) <= 1e-6


def _target_spacing(value: list[float] | str) -> bool:
    if isinstance(value, str):
        return value in ("auto", "median")
    return len(value) == 3 and min(value) > 0


def _sizes(length: int) -> Callable[[list[int]], bool]:
    return lambda value: len(value) == length and min(value) >= 1


def _device(name: str) -> bool:
    return re.fullmatch(r"auto|cpu|cuda(:\d+)?", name) is not None


@dataclass
class DataConfig(Checked):
    """Where the data is and how it is cut into training samples."""

    format: str = field(default="nnunet", metadata=rule(choices=FORMATS))
    """How the dataset is laid out: a format registered in ``morse.data.formats``."""
    root: str = ""
    """Dataset folder (atlas-demo: the mricron templates folder; mni-tissue: empty for the
    installed nilearn's data folder)."""
    spatial_dims: int = field(default=2, metadata=rule(choices=(2, 3)))
    """2: train on axial slices, evaluate volumes slice by slice; 3: patches, sliding window."""
    split_file: str | None = None
    """JSON {"train": [...], "val": [...], "test": [...]}; default: a seeded split by case."""
    split_fractions: list[float] = field(
        default_factory=lambda: [0.7, 0.1, 0.2],
        metadata=rule(test=_fractions,
                      text="three non-negative fractions (train, val, test) summing to 1"),
    )
    """Train, validation and test shares of the cases for the seeded split."""
    seed: int = 1337
    """Seed of the case split (the same split for every training seed)."""
    normalize: str = field(default="auto", metadata=rule(choices=INTENSITY_SCHEMES))
    """auto (per channel: CT -> ct-percentile, others -> zscore) | zscore (per volume, nonzero
    voxels) | ct-percentile (nnU-Net's CT: dataset foreground percentiles and mean/std) | ct
    (clip [-125, 275] HU, scale to [0, 1]) | minmax | none. Saved with the model for predict."""
    spacing: list[float] | None = None
    """synapse / acdc (files without spacing): voxel size in mm of every case, per axis of the
    loaded arrays (rows, columns, slices). Unset: distances are in voxels."""
    spacing_file: str | None = None
    """synapse / acdc: JSON {"case0001": [0.76, 0.76, 3.0], ...}, one voxel size per case."""
    target_spacing: list[float] | str | None = field(
        default="auto",
        metadata=rule(test=_target_spacing,
                      text="auto, median, null or three positive sizes in mm [sR, sA, sS]"),
    )
    """auto (nnunet/msd: RAS at the median spacing) | median | [sR, sA, sS] mm | null (as stored).

    As nnU-Net plans: every case is turned to RAS and resampled to this voxel size for the
    network; auto is off for the other formats. Prediction renders back on each scan's own
    grid."""
    slice_axis: int | None = field(default=None, metadata=rule(choices=(0, 1, 2)))
    """2D: the RAS axis to slice across (0 sagittal, 1 coronal, 2 axial); null: the coarsest.

    Needs a target spacing; ties go to axial."""
    slice_size: list[int] | None = field(
        default=None, metadata=rule(test=_sizes(2), text="2 positive integers (H, W) or null")
    )
    """2D: resize slices to this (H, W); unset: pad them to a multiple of 32. Inference renders
    back on each slice's own grid."""
    patch_size: list[int] = field(
        default_factory=lambda: [96, 96, 96],
        metadata=rule(test=_sizes(3), text="3 positive integers"),
    )
    """3D: training patch and sliding-window size."""
    samples_per_volume: int = field(default=4, metadata=rule(minimum=1))
    foreground_slices_only: bool = False
    """2D: train on slices holding foreground (plus a few empty ones)."""
    downsample: int = field(default=1, metadata=rule(minimum=1))
    """atlas-demo, mni-tissue: integer downsampling of the 1 mm volume."""
    num_workers: int = field(default=0, metadata=rule(minimum=0))


@dataclass
class ModelConfig(RendererConfig):
    """Backbone and renderer. The renderer's keys (``experts``, ``render_points``, ...) are
    ``morse.renderer.RendererConfig``'s fields, inherited here so the section stays flat."""

    backbone: str = field(default="unet", metadata=rule(choices=BACKBONES))
    backbone_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the backbone (e.g. width, img_size, pretrained)."""
    renderer: bool = True
    """False: the plain backbone (the renderer's keys are then ignored)."""


@dataclass
class LossConfig(Checked):
    """The loss: 0.5 (CE + Dice) on the coarse logits plus w(t) x point CE."""

    schedule: str = field(default="constant", metadata=rule(choices=POINT_WEIGHT_SCHEDULES))
    """How the point-loss weight w(t) moves: constant, or the authors' 2D delayed ramp."""
    point_weight: float | None = field(default=None, metadata=rule(minimum=0))
    """Final (or constant) point-loss weight; default 1.0 constant, 0.5 delayed-ramp."""
    coarse_weight: float = field(default=0.5, metadata=rule(minimum=0))
    """Weight of CE + Dice on the backbone's coarse logits (paper: 0.5)."""
    dice: str = field(default="batch", metadata=rule(choices=DICE_POOLING))
    """Coarse Dice pooled over the batch (the authors') or per image (MONAI's default)."""


@dataclass
class TrainConfig(Checked):
    """The optimiser, its schedule, and how often to validate, save and log."""

    iterations: int = field(default=30000, metadata=rule(minimum=1))
    """Optimiser steps (the paper: 30k)."""
    batch_size: int = field(default=4, metadata=rule(minimum=1))
    """Samples per step on each GPU (2D slices or 3D patches)."""
    optimizer: str = field(default="sgd", metadata=rule(choices=("sgd", "adamw")))
    """sgd (the paper: momentum, poly decay) or adamw (converges in fewer steps)."""
    lr: float = field(default=0.01, metadata=rule(minimum=0))
    """Initial learning rate, decayed polynomially to 0."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = field(default=1e-4, metadata=rule(minimum=0))
    """L2 weight decay (decoupled for AdamW)."""
    poly_power: float = 0.9
    """Power of the polynomial learning-rate decay."""
    seed: int = 1337
    """Seed of batches, augmentations, point sampling and expert dropping."""
    val_every: int = field(default=500, metadata=rule(minimum=1))
    """Validate (whole volumes, Dice) every this many steps; best.pt follows it."""
    checkpoint_every: int = field(default=500, metadata=rule(minimum=1))
    """Write last.pt (the resume point) every this many steps."""
    log_every: int = field(default=10, metadata=rule(minimum=1))
    """Write a row of curves.csv every this many steps."""
    precision: str = field(default="fp32", metadata=rule(choices=TRAIN_PRECISIONS))
    """Autocast precision; fp16 needs a GPU, bf16 runs on CPUs with bf16 and on GPUs."""
    device: str = field(
        default="auto", metadata=rule(test=_device, text="auto, cpu, cuda or cuda:N")
    )
    """auto (CUDA when present), cpu, cuda or cuda:N."""
    check_data: bool = True
    """Run the dataset check before training."""
    threads: int | None = field(default=None, metadata=rule(minimum=1))
    """CPU threads of torch in train, evaluate and predict; null: OMP_NUM_THREADS if set, else
    one per physical core, at most 8. On a machine other jobs keep busy, 1 can be several
    times faster (docs/explanation/performance.md). DataLoader workers use one thread each."""


@dataclass
class EvalConfig(Checked):
    """Inference on whole volumes: sliding windows, slice batches, example figures."""

    sw_batch_size: int = field(default=2, metadata=rule(minimum=1))
    """3D: windows per forward pass."""
    overlap: float = field(default=0.5, metadata=rule(minimum=0, maximum=0.99))
    """3D: overlap of neighbouring sliding windows."""
    sw_device: str | None = field(default=None, metadata=rule(choices=("cpu", "cuda")))
    """3D: device of the sliding-window stitching buffers; null: the CPU (GPU memory stays
    bounded by one batch of windows); "cuda" stitches faster where the volume's maps fit."""
    slice_batch_size: int = field(default=16, metadata=rule(minimum=1))
    """2D: slices per forward pass."""
    num_examples: int = field(default=6, metadata=rule(minimum=0))
    """Example slices saved for the report's overlay figures."""
    nsd_tolerances_mm: list[float] = field(default_factory=lambda: [1.0, 2.0])
    """Normalised surface Dice at each tolerance (in voxels for data without a voxel size)."""
    biou_width_mm: float = field(default=2.0, metadata=rule(minimum=0))
    """Boundary IoU band width (in voxels for data without a voxel size)."""
    tta: bool = False
    """Flip test-time augmentation in predict and evaluate: backbone logits averaged over the 2^D
    mirrorings before rendering (2^D backbone passes; validation in training never uses it)."""
    checkpoint: str = field(default="best", metadata=rule(choices=("best", "last")))
    """Which checkpoint of a run to score: best (best validation Dice) or last (the final
    model, TransUNet's Synapse protocol). A run without validation cases records last."""


@dataclass
class Config(Checked):
    """A whole run: data, model, loss, training and evaluation."""

    name: str = field(default="run", metadata=rule(
        test=lambda name: re.fullmatch(r"[\w.-]+", name) is not None and name not in (".", ".."),
        text="a plain folder name (letters, digits, _ . -; no / and not . or ..)"))
    """The run's name (default run folder: runs/<name>)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
