"""Build the model and loss a config describes."""

from __future__ import annotations

from morse.backbone import build_backbone
from morse.config import Config
from morse.losses import MorseLoss
from morse.model import Morse

__all__ = ["build_model", "build_loss"]

_RENDERER_KEYS = (
    "experts", "stochastic_gating", "renormalize_gate", "max_dropped", "fourier", "train_points",
    "oversample_ratio", "importance_ratio", "render_points", "render_steps", "render_upsample",
    "render_chunk", "expert_width", "head_width", "head_layers", "num_frequencies",
    "fourier_scale", "dropout",
)


def build_model(cfg: Config, in_channels: int, num_classes: int) -> Morse:
    """The backbone named in ``cfg.model`` with the renderer on or off."""
    spatial_dims = cfg.data.spatial_dims
    backbone = build_backbone(
        cfg.model.backbone, spatial_dims, in_channels, num_classes, **cfg.model.backbone_options
    )
    options = {key: getattr(cfg.model, key) for key in _RENDERER_KEYS}
    return Morse(backbone, num_classes, spatial_dims, renderer=cfg.model.renderer, **options)


def build_loss(cfg: Config, num_classes: int) -> MorseLoss:
    return MorseLoss(
        num_classes, cfg.loss.schedule, cfg.loss.point_weight, cfg.loss.coarse_weight,
        cfg.loss.dice,
    )
