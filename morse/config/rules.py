"""Allowed values and bounds of the config keys, checked when a config is loaded.

The enumerated keys read their choices from the registries that define them (formats,
backbones, schedules), so a new entry is allowed as soon as it is registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from morse.config.schema import Config, DataConfig

__all__ = ["check_values"]


def _choices() -> dict[str, tuple]:
    """Allowed values of the enumerated keys, read from the registries that define them."""
    from morse.backbone import available_backbones
    from morse.data.formats import available_formats
    from morse.data.intensity import INTENSITY_SCHEMES
    from morse.device import PRECISIONS
    from morse.losses import DICE_POOLING, POINT_WEIGHT_SCHEDULES

    return {
        "data.format": tuple(available_formats()),
        "data.spatial_dims": (2, 3),
        "data.normalize": tuple(INTENSITY_SCHEMES),
        "model.backbone": tuple(available_backbones()),
        "loss.schedule": tuple(POINT_WEIGHT_SCHEDULES),
        "loss.dice": DICE_POOLING,
        "train.optimizer": ("sgd", "adamw"),
        "train.precision": tuple(PRECISIONS),
        "eval.sw_device": (None, "cpu", "cuda"),
        "eval.checkpoint": ("best", "last"),
    }


_MINIMUM = {
    "data.samples_per_volume": 1, "data.downsample": 1, "data.num_workers": 0,
    "model.expert_width": 1, "model.head_width": 1, "model.head_layers": 1,
    "model.num_frequencies": 1, "model.max_dropped": 0,
    "loss.coarse_weight": 0, "loss.point_weight": 0,
    "train.iterations": 1, "train.batch_size": 1, "train.lr": 0, "train.weight_decay": 0,
    "train.val_every": 1, "train.checkpoint_every": 1, "train.log_every": 1,
    "eval.sw_batch_size": 1, "eval.overlap": 0, "eval.slice_batch_size": 1,
    "eval.num_examples": 0, "eval.biou_width_mm": 0,
}
_MAXIMUM = {"eval.overlap": 0.99}


def _value(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def check_values(cfg: Config, origin: str = "config") -> None:
    """Check every enumerated or bounded key; the message lists what is allowed.

    >>> from morse.config import Config, TrainConfig
    >>> check_values(Config(train=TrainConfig(iterations=5)))
    >>> check_values(Config(train=TrainConfig(iterations=-3)))
    Traceback (most recent call last):
    ...
    morse.errors.ConfigError: config: train.iterations must be >= 1, got -3
    """
    for key, allowed in _choices().items():
        if _value(cfg, key) not in allowed:
            shown = ", ".join("null" if a is None else str(a) for a in allowed)
            raise _error(f"{origin}: {key} must be one of {shown}; got {_value(cfg, key)!r}")
    for key, low in _MINIMUM.items():
        value = _value(cfg, key)
        if value is not None and value < low:
            raise _error(f"{origin}: {key} must be >= {low}, got {value!r}")
    for key, high in _MAXIMUM.items():
        if _value(cfg, key) > high:
            raise _error(f"{origin}: {key} must be <= {high}, got {_value(cfg, key)!r}")
    _check_device(cfg.train.device, origin)
    _check_sizes(cfg.data, origin)


def _check_device(name: str, origin: str) -> None:
    import torch

    if name == "auto":
        return
    try:
        known = torch.device(name).type in ("cpu", "cuda")
    except RuntimeError:
        known = False
    if not known:
        raise _error(
            f"{origin}: train.device must be auto, cpu, cuda or cuda:N; got {name!r}"
        )


def _check_target_spacing(value: list[float] | str | None, origin: str) -> None:
    if isinstance(value, str) and value not in ("auto", "median"):
        raise _error(f"{origin}: data.target_spacing must be auto, median, null or three "
                          f"sizes in mm [sR, sA, sS]; got {value!r}")
    if isinstance(value, list) and (len(value) != 3 or min(value) <= 0):
        raise _error(f"{origin}: data.target_spacing must be three positive sizes in mm "
                          f"[sR, sA, sS]; got {value}")


def _check_sizes(data: DataConfig, origin: str) -> None:
    fractions = data.split_fractions
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise _error(
            f"{origin}: data.split_fractions must be three non-negative fractions (train, val, "
            f"test) summing to 1; got {fractions}"
        )
    _check_target_spacing(data.target_spacing, origin)
    if data.slice_axis not in (None, 0, 1, 2):
        raise _error(f"{origin}: data.slice_axis must be null, 0, 1 or 2 (RAS axis); got "
                          f"{data.slice_axis!r}")
    expected = {"slice_size": 2, "patch_size": 3}
    for key, length in expected.items():
        size = getattr(data, key)
        if size is not None and (len(size) != length or min(size) < 1):
            raise _error(
                f"{origin}: data.{key} must be {length} positive integers; got {size}"
            )


def _error(message: str) -> Exception:
    from morse.errors import ConfigError

    return ConfigError(message)
