"""Run configuration: typed dataclasses loaded from YAML, validated, with ``a.b=value`` overrides.

Unknown keys and wrong types are errors that name the key (and a close match), so a typo
fails at load time instead of silently training with a default.

>>> cfg = load_config("demo", overrides=["train.iterations=10"])
>>> cfg.train.iterations, cfg.model.backbone
(10, 'unet')
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from morse.config_values import check_values
from morse.errors import ConfigError
from morse.renderer.config import RendererConfig

__all__ = [
    "Config", "DataConfig", "ModelConfig", "LossConfig", "TrainConfig", "EvalConfig",
    "load_config", "config_from_dict", "config_to_dict", "save_config",
    "available_presets",
]



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


def available_presets() -> list[str]:
    """Names of the YAML presets shipped in ``morse/configs``."""
    folder = resources.files("morse.configs")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_config(source: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a preset name or YAML file, apply ``section.key=value`` overrides, validate."""
    path = Path(source)
    if not path.exists():
        presets = available_presets()
        if str(source) not in presets:
            raise ConfigError(
                f"{source}: no such config file or preset; presets: {', '.join(presets)}"
            )
        path = Path(str(resources.files("morse.configs") / f"{source}.yaml"))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides or []:
        _apply_override(raw, item)
    return config_from_dict(raw, origin=str(path))


def _apply_override(raw: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: write it as section.key=value")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(value)


def config_from_dict(raw: dict, origin: str = "config") -> Config:
    """Build a validated ``Config`` from plain data (YAML or a checkpoint)."""
    cfg = _build(Config, raw, origin, prefix="")
    check_values(cfg, origin)
    return cfg


def _build(cls: type, raw: Any, origin: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: {prefix or 'config'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ConfigError(
                f"{origin}: unknown key {prefix}{key}{hint} (known: {', '.join(fields)})"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, value, origin, f"{prefix}{key}.")
        else:
            values[key] = _check_type(value, hint, f"{prefix}{key}", origin)
    try:
        return cls(**values)
    except ValueError as error:  # a dataclass's own checks (e.g. RendererConfig's ranges)
        raise ConfigError(f"{origin}: {prefix}{error}") from error


def _check_type(value: Any, hint: Any, key: str, origin: str) -> Any:
    origin_type = typing.get_origin(hint)
    if origin_type in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        for option in options:
            try:
                return _check_type(value, option, key, origin)
            except ConfigError:
                pass
        names = " or ".join(_type_name(option) for option in options)
        raise ConfigError(f"{origin}: {key} must be {names}, got {value!r}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{origin}: {key} must be null, got {value!r}")
    if hint is Any:
        return value
    if origin_type is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{origin}: {key} must be a list, got {value!r}")
        (item_hint,) = typing.get_args(hint)
        return [_check_type(v, item_hint, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if origin_type is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{origin}: {key} must be true or false, got {value!r}")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{origin}: {key} must be an integer, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(
            f"{origin}: {key} must be {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def config_to_dict(cfg: Config) -> dict:
    """Plain data (dicts, lists, str, numbers, bool, None), safe for YAML and checkpoints."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML."""
    path = Path(path)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path
