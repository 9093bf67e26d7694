"""A trained run as a model: find its checkpoint, rebuild the model safely, predict cases."""

from __future__ import annotations

from pathlib import Path

import torch

from morse.build import build_model
from morse.config import Config, config_from_dict
from morse.data.volume import DataError, Volume
from morse.inference.volumes import VolumePrediction, predict_volume
from morse.model import Morse
from morse.training.checkpoint import BEST_NAME, LAST_NAME, load_checkpoint, validate_checkpoint

__all__ = ["load_trained", "resolve_checkpoint", "predict_case"]


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


def load_trained(
    source: str | Path, device: str | torch.device = "cpu"
) -> tuple[Morse, Config, list[str]]:
    """Rebuild the model of a checkpoint (safe loading) with its config and class names."""
    path = resolve_checkpoint(source)
    state = load_checkpoint(path)
    validate_checkpoint(state, path, ["model", "config", "class_names"])
    cfg = config_from_dict(state["config"], origin=str(path))
    class_names = list(state["class_names"])
    in_channels = _in_channels(state["model"])
    model = build_model(cfg, in_channels, len(class_names))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg, class_names


def _in_channels(state_dict: dict) -> int:
    """Input channels from the first convolution weight of the backbone."""
    for key, value in state_dict.items():
        if key.startswith("backbone.") and key.endswith("weight") and value.dim() >= 4:
            return int(value.shape[1])
    raise DataError("cannot find the backbone's first convolution in the checkpoint")


def predict_case(model: Morse, cfg: Config, volume: Volume, device, **options) -> VolumePrediction:
    """``predict_volume`` with the settings of a run's config."""
    return predict_volume(
        model, volume.image, device=device, slice_size=cfg.data.slice_size,
        patch_size=cfg.data.patch_size, slice_batch_size=cfg.eval.slice_batch_size,
        sw_batch_size=cfg.eval.sw_batch_size, overlap=cfg.eval.overlap,
        sw_device=cfg.eval.sw_device, precision=cfg.train.precision, **options,
    )
