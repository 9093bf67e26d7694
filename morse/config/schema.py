"""The run configuration's sections: typed dataclasses, one documented field per YAML key.

``Config`` holds a ``data``, ``model``, ``loss``, ``train`` and ``eval`` section; the
``model`` section inherits the renderer's keys from :class:`RendererConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from morse.config.renderer import RendererConfig

__all__ = ["Config", "DataConfig", "ModelConfig", "LossConfig", "TrainConfig", "EvalConfig"]


@dataclass
class DataConfig:
    """Where the data is and how it is cut into training samples."""

    format: str = "nnunet"
    """nnunet | msd | synapse | acdc | atlas-demo (``morse.data.formats.available_formats``)."""
    root: str = ""
    """Dataset folder (for atlas-demo: the mricron templates folder)."""
    spatial_dims: int = 2
    """2: train on axial slices, evaluate volumes slice by slice; 3: patches, sliding window."""
    split_file: str | None = None
    """JSON {"train": [...], "val": [...], "test": [...]}; default: a seeded split by case."""
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.1, 0.2])
    """Train, validation and test shares of the cases for the seeded split."""
    seed: int = 1337
    """Seed of the case split (the same split for every training seed)."""
    normalize: str = "auto"
    """auto (per channel: CT -> ct-percentile, others -> zscore) | zscore (per volume, nonzero
    voxels) | ct-percentile (nnU-Net's CT: dataset foreground percentiles and mean/std) | ct
    (clip [-125, 275] HU, scale to [0, 1]) | minmax | none. Saved with the model for predict."""
    spacing: list[float] | None = None
    """synapse / acdc (files without spacing): voxel size in mm of every case, per axis of the
    loaded arrays (rows, columns, slices). Unset: distances are in voxels."""
    spacing_file: str | None = None
    """synapse / acdc: JSON {"case0001": [0.76, 0.76, 3.0], ...}, one voxel size per case."""
    target_spacing: list[float] | str | None = "auto"
    """auto (nnunet/msd: RAS at the median spacing) | median | [sR, sA, sS] mm | null (as stored).

    As nnU-Net plans: every case is turned to RAS and resampled to this voxel size for the
    network; auto is off for the other formats. Prediction renders back on each scan's own
    grid."""
    slice_axis: int | None = None
    """2D: the RAS axis to slice across (0 sagittal, 1 coronal, 2 axial); null: the coarsest.

    Needs a target spacing; ties go to axial."""
    slice_size: list[int] | None = None
    """2D: resize slices to this (H, W); unset: pad them to a multiple of 32. Inference renders
    back on each slice's own grid."""
    patch_size: list[int] = field(default_factory=lambda: [96, 96, 96])
    """3D: training patch and sliding-window size."""
    samples_per_volume: int = 4
    foreground_slices_only: bool = False
    """2D: train on slices holding foreground (plus a few empty ones)."""
    downsample: int = 1
    """atlas-demo: integer downsampling of the 1 mm volume."""
    num_workers: int = 0


@dataclass
class ModelConfig(RendererConfig):
    """Backbone and renderer. The renderer's keys (``experts``, ``render_points``, ...) are
    ``morse.renderer.RendererConfig``'s fields, inherited here so the section stays flat."""

    backbone: str = "unet"
    backbone_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the backbone (e.g. width, img_size, pretrained)."""
    renderer: bool = True
    """False: the plain backbone (the renderer's keys are then ignored)."""


@dataclass
class LossConfig:
    """The loss: 0.5 (CE + Dice) on the coarse logits plus w(t) x point CE."""

    schedule: str = "constant"
    """How the point-loss weight w(t) moves: constant, or the authors' 2D delayed ramp."""
    point_weight: float | None = None
    """Final (or constant) point-loss weight; default 1.0 constant, 0.5 delayed-ramp."""
    coarse_weight: float = 0.5
    """Weight of CE + Dice on the backbone's coarse logits (paper: 0.5)."""
    dice: str = "batch"
    """Coarse Dice pooled over the batch (the authors') or per image (MONAI's default)."""


@dataclass
class TrainConfig:
    """The optimiser, its schedule, and how often to validate, save and log."""

    iterations: int = 30000
    """Optimiser steps (the paper: 30k)."""
    batch_size: int = 4
    """Samples per step on each GPU (2D slices or 3D patches)."""
    optimizer: str = "sgd"
    """sgd (the paper: momentum, poly decay) or adamw (converges in fewer steps)."""
    lr: float = 0.01
    """Initial learning rate, decayed polynomially to 0."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 1e-4
    """L2 weight decay (decoupled for AdamW)."""
    poly_power: float = 0.9
    """Power of the polynomial learning-rate decay."""
    seed: int = 1337
    """Seed of batches, augmentations, point sampling and expert dropping."""
    val_every: int = 500
    """Validate (whole volumes, Dice) every this many steps; best.pt follows it."""
    checkpoint_every: int = 500
    """Write last.pt (the resume point) every this many steps."""
    log_every: int = 10
    """Write a row of curves.csv every this many steps."""
    precision: str = "fp32"
    """Autocast precision; fp16 needs a GPU, bf16 runs on CPUs with bf16 and on GPUs."""
    device: str = "auto"
    """auto (CUDA when present), cpu, cuda or cuda:N."""
    check_data: bool = True
    """Run the dataset check before training."""


@dataclass
class EvalConfig:
    """Inference on whole volumes: sliding windows, slice batches, example figures."""

    sw_batch_size: int = 2
    """3D: windows per forward pass."""
    overlap: float = 0.5
    """3D: overlap of neighbouring sliding windows."""
    sw_device: str | None = None
    """Device for the sliding-window stitching buffer ("cpu" bounds GPU memory)."""
    slice_batch_size: int = 16
    """2D: slices per forward pass."""
    num_examples: int = 6
    """Example slices saved for the report's overlay figures."""
    nsd_tolerances_mm: list[float] = field(default_factory=lambda: [1.0, 2.0])
    """Normalised surface Dice at each tolerance (in voxels for data without a voxel size)."""
    biou_width_mm: float = 2.0
    """Boundary IoU band width (in voxels for data without a voxel size)."""
    tta: bool = False
    """Flip test-time augmentation in predict and evaluate: backbone logits averaged over the 2^D
    mirrorings before rendering (2^D backbone passes; validation in training never uses it)."""
    checkpoint: str = "best"
    """Which checkpoint of a run to score: best (best validation Dice) or last (the final
    model, TransUNet's Synapse protocol). A run without validation cases records last."""


@dataclass
class Config:
    """A whole run: data, model, loss, training and evaluation."""

    name: str = "run"
    """The run's name (default run folder: runs/<name>)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
