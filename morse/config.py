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

__all__ = [
    "Config", "DataConfig", "ModelConfig", "LossConfig", "TrainConfig", "EvalConfig",
    "ConfigError", "load_config", "config_from_dict", "config_to_dict", "save_config",
    "available_presets",
]


class ConfigError(ValueError):
    """A configuration problem, with the key at fault in the message."""


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
    seed: int = 1337
    normalize: str = "auto"
    """auto (per channel: CT -> ct-percentile, others -> zscore) | zscore (per volume, nonzero
    voxels) | ct-percentile (nnU-Net's CT: dataset foreground percentiles and mean/std) | ct
    (clip [-125, 275] HU, scale to [0, 1]) | minmax | none. Saved with the model for predict."""
    spacing: list[float] | None = None
    """synapse / acdc (files without spacing): voxel size in mm of every case, per axis of the
    loaded arrays (rows, columns, slices). Unset: distances are in voxels."""
    spacing_file: str | None = None
    """synapse / acdc: JSON {"case0001": [0.76, 0.76, 3.0], ...}, one voxel size per case."""
    slice_size: list[int] | None = None
    """2D: resize slices to this (H, W) for training; inference renders back at full size."""
    patch_size: list[int] = field(default_factory=lambda: [96, 96, 96])
    """3D: training patch and sliding-window size."""
    samples_per_volume: int = 4
    foreground_slices_only: bool = False
    downsample: int = 1
    """atlas-demo: integer downsampling of the 1 mm volume."""
    num_workers: int = 0


@dataclass
class ModelConfig:
    """Backbone and renderer; see ``morse.Morse`` for each switch."""

    backbone: str = "unet"
    backbone_options: dict[str, Any] = field(default_factory=dict)
    renderer: bool = True
    experts: bool = True
    stochastic_gating: bool = True
    renormalize_gate: bool = True
    max_dropped: int | None = None
    fourier: bool = True
    train_points: int | None = None
    oversample_ratio: float = 3.0
    importance_ratio: float = 0.75
    render_points: int = 8192
    render_steps: int = 2
    render_upsample: bool = False
    render_chunk: int | None = None
    expert_width: int = 256
    head_width: int = 256
    head_layers: int = 3
    num_frequencies: int = 128
    fourier_scale: float = 1.0
    dropout: float = 0.1


@dataclass
class LossConfig:
    schedule: str = "constant"
    """constant | delayed-ramp (the authors' 2D schedule)."""
    point_weight: float | None = None
    coarse_weight: float = 0.5


@dataclass
class TrainConfig:
    iterations: int = 30000
    batch_size: int = 4
    optimizer: str = "sgd"
    """sgd (the paper: momentum 0.9, poly decay) | adamw (converges in fewer steps)."""
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    seed: int = 1337
    val_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 10
    precision: str = "fp32"
    """fp32 | bf16 | fp16 (autocast; fp16 needs a GPU)."""
    device: str = "auto"
    check_data: bool = True


@dataclass
class EvalConfig:
    sw_batch_size: int = 2
    overlap: float = 0.5
    sw_device: str | None = None
    """Device for the sliding-window stitching buffer ("cpu" bounds GPU memory)."""
    slice_batch_size: int = 16
    num_examples: int = 6


@dataclass
class Config:
    name: str = "run"
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
    return _build(Config, raw, origin, prefix="")


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
    return cls(**values)


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
