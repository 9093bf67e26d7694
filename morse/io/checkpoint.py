"""Checkpoints: atomic saving, safe loading, and the MORSE checkpoint layout.

Layout (``version`` 1), as built by :func:`make_checkpoint`::

    {
        "format": "morse-checkpoint",   # filled in by make_checkpoint
        "version": 1,                   # filled in by make_checkpoint
        "model": state_dict,            # unwrapped model (no "module." prefix)
        "optimizer": state_dict,
        "scheduler": state_dict,
        "step": int,                    # optimizer steps done
        "epoch": int,                   # epochs finished
        "rng": capture_rng_state(),     # morse.training.rng
        "sampler": {...},               # e.g. {"epoch": int, "seed": int}
        "config": plain dict,           # the resolved run config
        "best_metric": float,           # best validation metric so far
        "class_names": list[str],       # label order of the output channels
        "in_channels": int,             # image channels the model takes
        "preprocessing": plain dict,    # raw scan -> network input (morse.data.intensity)
        "calibration": plain dict,      # the render budget measured for these weights
    }

``config``, ``class_names`` and ``in_channels`` rebuild the model; ``preprocessing`` tells
``morse predict`` how to normalise a raw scan as the training data were; ``calibration``
(:mod:`morse.model.calibration`, added by :func:`update_checkpoint`) is the render budget
measured for the weights it is saved with. Checkpoints without it load as before.

Only ``model`` is required; every other part is optional. All of it must be
tensors or plain data (dict, list, tuple, str, int, float, bool, None), because
:func:`load_checkpoint` always loads with ``torch.load(weights_only=True)``: a
checkpoint holding arbitrary Python objects is refused, never executed.

Files in a run folder: ``last.pt`` (written every save, used to resume) and ``best.pt``
(written by :func:`keep_best` when the validation metric improves). Every write is atomic
(``morse.io``), so a crash mid-write leaves the previous good file in place.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from morse.errors import CheckpointError
from morse.io import atomic_write_bytes

__all__ = [
    "BEST_NAME",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "LAST_NAME",
    "keep_best",
    "load_checkpoint",
    "make_checkpoint",
    "save_checkpoint",
    "update_checkpoint",
    "validate_checkpoint",
]

CHECKPOINT_FORMAT = "morse-checkpoint"
CHECKPOINT_VERSION = 1
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"

LAYOUT_KEYS = (
    "model", "optimizer", "scheduler", "step", "epoch", "rng", "sampler",
    "config", "best_metric", "class_names", "in_channels", "preprocessing", "calibration",
)
_PLAIN_SCALARS = (str, int, float, bool, type(None))
# What torch's weights-only unpickler says when a pickle asks for a Python object
# (a global, a call, a custom class); other unpickling errors mean a damaged file.
_OBJECT_REFUSAL = re.compile(
    r"GLOBAL |unrecognized function|Can only create new object|Can only build"
)



# ---------------------------------------------------------------------------
# saving


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (see ``morse.io``) and return the path.

    If anything fails, ``path`` keeps its previous content.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def update_checkpoint(path: str | os.PathLike[str], **parts: Any) -> Path:
    """Replace layout parts (e.g. ``calibration``) of the MORSE checkpoint at ``path``,
    keeping everything else as saved; written atomically."""
    state = load_checkpoint(path)
    validate_checkpoint(state, path)
    fields = {key: value for key, value in state.items() if key not in ("format", "version")}
    return save_checkpoint(path, make_checkpoint(**{**fields, **parts}))


# ---------------------------------------------------------------------------
# loading


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint dict with ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` for a missing file, an unreadable or
    truncated file, a file holding Python objects (refused, never executed) and
    a file whose top level is not a dict.
    """
    source = Path(path)
    if not source.is_file():
        what = "is a folder, not a file" if source.is_dir() else "does not exist"
        raise CheckpointError(
            f"checkpoint {source} {what}; check the path, or point to <run_dir>/{LAST_NAME}"
        )
    state = _torch_load(source, map_location)
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {source} holds a {type(state).__name__}, not a dict; "
            "save it with morse.io.checkpoint.save_checkpoint"
        )
    return state


def _torch_load(source: Path, map_location: str | torch.device | None) -> Any:
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if _OBJECT_REFUSAL.search(str(error)):
            raise CheckpointError(_refusal_message(source, str(error))) from error
        raise CheckpointError(_unreadable_message(source)) from error
    except PermissionError as error:
        raise CheckpointError(
            f"checkpoint {source} cannot be opened (permission denied); fix its permissions"
        ) from error
    except (RuntimeError, EOFError, KeyError, ValueError, TypeError, AttributeError,
            IndexError, OSError) as error:
        raise CheckpointError(_unreadable_message(source)) from error


def _refusal_message(source: Path, detail: str) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", detail)
    culprit = f" (found {found.group(1)})" if found else ""
    return (
        f"refused: {source} holds Python objects that could run code when loaded{culprit}; "
        "MORSE loads only tensors and plain containers"
    )


def _unreadable_message(source: Path) -> str:
    return (
        f"checkpoint {source} is not a readable PyTorch checkpoint (truncated or another "
        f"format); re-save it or point to {LAST_NAME}"
    )


def validate_checkpoint(
    state: Mapping[str, Any], path: str | os.PathLike[str], keys: Iterable[str] = ("model",)
) -> None:
    """Check ``state`` is a MORSE checkpoint of a version this code reads, holding ``keys``."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {state.get('format')!r}, expected "
            f"{CHECKPOINT_FORMAT!r}; point to a checkpoint written by MORSE"
        )
    version = state.get("version")
    if not isinstance(version, int) or not 1 <= version <= CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has version {version!r}, this MORSE reads 1..{CHECKPOINT_VERSION}; "
            "upgrade MORSE or re-save the checkpoint"
        )
    missing = [key for key in keys if key not in state]
    if missing:
        present = sorted(str(key) for key in state)
        raise CheckpointError(
            f"checkpoint {path} is missing {missing} (it has {present}); "
            "use a MORSE training checkpoint such as last.pt"
        )


# ---------------------------------------------------------------------------
# layout


def make_checkpoint(**parts: Any) -> dict[str, Any]:
    """Build a checkpoint dict in the documented layout, with format and version filled in.

    Accepts only the layout keys (``model`` required). ``config``, ``preprocessing`` and
    ``sampler`` must be plain data (``sampler`` may also hold tensors, e.g. a
    generator state) so the checkpoint loads with ``weights_only=True``.
    """
    unknown = sorted(set(parts) - set(LAYOUT_KEYS))
    if unknown:
        raise ValueError(f"unknown checkpoint parts {unknown}; allowed: {list(LAYOUT_KEYS)}")
    if "model" not in parts:
        raise ValueError("make_checkpoint needs model=<state_dict>")
    _check_part_types(parts)
    for key in ("config", "preprocessing", "calibration"):
        if key in parts:
            _check_plain(parts[key], key, allow_tensors=False)
    if "sampler" in parts:
        _check_plain(parts["sampler"], "sampler", allow_tensors=True)
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **parts}


def _check_part_types(parts: Mapping[str, Any]) -> None:
    for key in ("step", "epoch", "in_channels"):
        if key in parts and (isinstance(parts[key], bool) or not isinstance(parts[key], int)):
            raise TypeError(f"checkpoint {key} must be an int, got {type(parts[key]).__name__}")
    if "best_metric" in parts:
        value = parts["best_metric"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"checkpoint best_metric must be a float, got {type(value).__name__}")
    if "class_names" in parts:
        names = parts["class_names"]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise TypeError("checkpoint class_names must be a list of str")


def _check_plain(value: Any, where: str, allow_tensors: bool) -> None:
    """Raise TypeError naming the first entry that is not plain data."""
    if isinstance(value, _PLAIN_SCALARS) or (allow_tensors and isinstance(value, torch.Tensor)):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key of type {type(key).__name__}; use str keys")
            _check_plain(item, f"{where}[{key!r}]", allow_tensors)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]", allow_tensors)
        return
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}; checkpoints hold only "
        "dicts, lists, str, int, float, bool and None here (convert it, e.g. str(path))"
    )


# ---------------------------------------------------------------------------
# run folder


def keep_best(
    run_dir: str | os.PathLike[str],
    metric: float,
    state: dict[str, Any],
    mode: Literal["max", "min"] = "max",
) -> bool:
    """Write ``run_dir/best.pt`` atomically when ``metric`` beats the one stored there.

    The stored ``best_metric`` of the existing best.pt is the reference (read
    with ``mmap`` so its tensors are not loaded). The saved state gets
    ``best_metric = metric``; ``state`` itself is not modified. A NaN metric
    never improves. Returns whether best.pt was written.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    metric = float(metric)
    if math.isnan(metric):
        return False
    target = Path(run_dir) / BEST_NAME
    previous = _stored_best_metric(target)
    if previous is not None and not _improves(metric, previous, mode):
        return False
    save_checkpoint(target, {**state, "best_metric": metric})
    return True


def _improves(metric: float, previous: float, mode: str) -> bool:
    return metric > previous if mode == "max" else metric < previous


def _stored_best_metric(target: Path) -> float | None:
    if not target.is_file():
        return None
    try:
        stored = torch.load(target, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # an unreadable best.pt is simply replaced
        warnings.warn(f"{target} is unreadable ({type(error).__name__}); replacing it",
                      stacklevel=3)
        return None
    value = stored.get("best_metric") if isinstance(stored, dict) else None
    if isinstance(value, (int, float)) and not math.isnan(float(value)):
        return float(value)
    return None
