"""Resuming a run exactly as it was saved: ``last.pt`` is read and checked, and a config that
would change the training (given again with ``--resume``, or edited in ``config.yaml``) is
refused with the keys that differ, instead of being silently ignored."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from morse.config import Config, config_from_dict, config_to_dict
from morse.errors import CheckpointError, ConfigError
from morse.io.checkpoint import LAST_NAME, load_checkpoint, validate_checkpoint

__all__ = ["fit_optimizer_state", "load_resume_state", "training_changes"]

_RESUME_PARTS = ["model", "optimizer", "scheduler", "step", "rng", "config"]
_TRAINING_SECTIONS = ("data", "model", "loss", "train")
FREE_KEYS = ("train.device", "train.check_data", "train.threads", "data.num_workers")
"""Settings that change where and how fast a run trains, not what it learns."""


def load_resume_state(run_dir: Path, requested: Config | None = None) -> dict:
    """``run_dir/last.pt``, checked; ``requested`` (if given) and ``config.yaml`` must train as
    the config saved in it does."""
    path = run_dir / LAST_NAME
    if not path.exists():
        raise CheckpointError(f"{path}: nothing to resume (no last.pt); start a new run instead")
    state = load_checkpoint(path)
    validate_checkpoint(state, path, _RESUME_PARTS)
    saved = config_from_dict(state["config"], origin=str(path))
    if requested is not None:
        _refuse_changes(saved, requested, "the config given with --resume",
                        "start a new run (-o NEW_FOLDER) to train with other settings")
    edited = run_dir / "config.yaml"
    if edited.is_file():
        _refuse_changes(saved, _read_config(edited), str(edited),
                        f"restore it (resume runs the config saved in {path.name}) or start "
                        "a new run with the edited file")
    return state


def _read_config(path: Path) -> Config:
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error}); restore the file") from error
    return config_from_dict(loaded if isinstance(loaded, dict) else {}, origin=str(path))


def _refuse_changes(saved: Config, other: Config, what: str, fix: str) -> None:
    changes = training_changes(saved, other)
    if changes:
        shown = "; ".join(changes[:5]) + ("; ..." if len(changes) > 5 else "")
        raise ConfigError(f"{what} trains otherwise than the run being resumed ({shown}); {fix}")


def training_changes(saved: Config, wanted: Config) -> list[str]:
    """``key: saved -> wanted`` for each training setting that differs (not ``eval``: the loop
    may set ``eval.checkpoint``, and scoring settings do not change training; nor
    :data:`FREE_KEYS`).

    >>> from morse.config import TrainConfig
    >>> training_changes(Config(), Config(train=TrainConfig(lr=0.1)))
    ['train.lr: 0.01 -> 0.1']
    """
    flat_saved, flat_wanted = _flat(config_to_dict(saved)), _flat(config_to_dict(wanted))
    keys = [k for k in flat_wanted if k.split(".")[0] in _TRAINING_SECTIONS]
    return [f"{k}: {flat_saved.get(k)!r} -> {flat_wanted[k]!r}" for k in keys
            if k not in FREE_KEYS and flat_saved.get(k) != flat_wanted[k]]


def _flat(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``; dict values of keys (``backbone_options``) stay.

    >>> _flat({"model": {"experts": True, "backbone_options": {"width": 0.5}}, "name": "x"})
    {'model.experts': True, 'model.backbone_options': {'width': 0.5}, 'name': 'x'}
    """
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and not prefix:
            out.update(_flat(value, f"{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def fit_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter buffer (momentum, Adam moments) its parameter's shape.

    Runs saved while the renderer's point layers were 1x1 ``Conv1d`` hold (C_out, C_in, 1)
    buffers for what are now ``nn.Linear`` (C_out, C_in) weights; the model's state dict is
    migrated as it loads, and this does the same for the optimizer's.
    """
    for param, buffers in optimizer.state.items():
        for name, value in buffers.items():
            if (isinstance(value, torch.Tensor) and value.dim() > 0
                    and value.shape != param.shape and value.numel() == param.numel()):
                buffers[name] = value.reshape(param.shape)
