"""Resuming a run exactly as it was saved: ``last.pt`` is read and checked, and a config that
would change the run (given again with ``--resume``, or edited in ``config.yaml``) is refused
with the keys that differ, instead of being silently ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from morse.config import Config, config_to_dict
from morse.errors import CheckpointError, ConfigError
from morse.io.checkpoint import LAST_NAME, load_checkpoint, validate_checkpoint

__all__ = ["config_changes", "load_resume_state"]

_RESUME_PARTS = ["model", "optimizer", "scheduler", "step", "rng", "config"]


def load_resume_state(run_dir: Path, requested: Config | None = None) -> dict:
    """``run_dir/last.pt``, checked; ``requested`` (if given) and ``config.yaml`` must match the
    config saved in it."""
    path = run_dir / LAST_NAME
    if not path.exists():
        raise CheckpointError(f"{path}: nothing to resume (no last.pt); start a new run instead")
    state = load_checkpoint(path)
    validate_checkpoint(state, path, _RESUME_PARTS)
    saved = state["config"]
    if requested is not None:
        _refuse_changes(saved, config_to_dict(requested), "the config given with --resume",
                        "start a new run (-o NEW_FOLDER) to train with other settings")
    edited = run_dir / "config.yaml"
    if edited.is_file():
        _refuse_changes(saved, _read_yaml(edited), f"{edited}",
                        f"restore it (resume runs the config saved in {path.name}) or start "
                        "a new run with the edited file")
    return state


def _read_yaml(path: Path) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error}); restore the file") from error
    return loaded if isinstance(loaded, dict) else {}


def _refuse_changes(saved: dict, other: dict, what: str, fix: str) -> None:
    changes = config_changes(saved, other)
    if changes:
        shown = "; ".join(changes[:5]) + ("; ..." if len(changes) > 5 else "")
        raise ConfigError(f"{what} differs from the run being resumed ({shown}); {fix}")


def config_changes(saved: dict[str, Any], other: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: saved -> other`` for every leaf that differs between two config dicts.

    >>> config_changes({"train": {"lr": 0.01, "seed": 1}}, {"train": {"lr": 0.1, "seed": 1}})
    ['train.lr: 0.01 -> 0.1']
    """
    changes = []
    for key in sorted(set(saved) | set(other), key=str):
        a, b = saved.get(key), other.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes
