"""A trained run as a model: find its checkpoint, rebuild the model safely, predict cases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from morse.build import build_model
from morse.config import Config, config_from_dict
from morse.data.volume import DataError, Volume
from morse.inference.volumes import VolumePrediction, predict_volume
from morse.model import Morse
from morse.training.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointError,
    load_checkpoint,
    validate_checkpoint,
)

__all__ = ["TrainedRun", "load_run", "load_trained", "resolve_checkpoint", "predict_case"]


def resolve_checkpoint(source: str | Path) -> Path:
    """A checkpoint file, or a run folder's best.pt (else last.pt)."""
    source = Path(source)
    if source.is_dir():
        for name in (BEST_NAME, LAST_NAME):
            if (source / name).is_file():
                return source / name
        raise DataError(f"{source}: no best.pt or last.pt in this run folder; train it first")
    if not source.is_file():
        raise DataError(f"{source}: no such checkpoint or run folder")
    return source


@dataclass
class TrainedRun:
    """A trained model with what it needs to be used.

    Attributes:
        model: the Morse model, in eval mode.
        config: the run's config.
        class_names: K names, background first.
        preprocessing: how a raw scan becomes the network's input
            (:func:`morse.data.intensity.raw_to_network`); None for checkpoints written
            before MORSE recorded it.
        path: the checkpoint file.
    """

    model: Morse
    config: Config
    class_names: list[str]
    preprocessing: dict | None
    path: Path


def load_run(source: str | Path, device: str | torch.device = "cpu") -> TrainedRun:
    """Rebuild the model of a checkpoint (safe loading) from its config, classes and channels."""
    path = resolve_checkpoint(source)
    state = load_checkpoint(path)
    validate_checkpoint(state, path, ["model", "config", "class_names"])
    if "in_channels" not in state:
        raise CheckpointError(
            f"checkpoint {path} does not say how many image channels the model takes (written "
            "before MORSE saved in_channels); retrain it with this version"
        )
    cfg = config_from_dict(state["config"], origin=str(path))
    class_names = list(state["class_names"])
    model = build_model(cfg, int(state["in_channels"]), len(class_names))
    model.load_state_dict(state["model"])
    return TrainedRun(model.to(device).eval(), cfg, class_names, state.get("preprocessing"), path)


def load_trained(
    source: str | Path, device: str | torch.device = "cpu"
) -> tuple[Morse, Config, list[str]]:
    """The model, config and class names of a checkpoint (see :func:`load_run`)."""
    run = load_run(source, device)
    return run.model, run.config, run.class_names


def predict_case(model: Morse, cfg: Config, volume: Volume, device, **options) -> VolumePrediction:
    """``predict_volume`` with the settings of a run's config."""
    return predict_volume(
        model, volume.image, device=device, slice_size=cfg.data.slice_size,
        patch_size=cfg.data.patch_size, slice_batch_size=cfg.eval.slice_batch_size,
        sw_batch_size=cfg.eval.sw_batch_size, overlap=cfg.eval.overlap,
        sw_device=cfg.eval.sw_device, precision=cfg.train.precision, **options,
    )
