"""Build the model a config describes."""

from __future__ import annotations

from morse.backbone import build_backbone
from morse.config import Config
from morse.model.module import Morse

__all__ = ["build_model"]


def build_model(cfg: Config, in_channels: int, num_classes: int) -> Morse:
    """The backbone named in ``cfg.model`` with the renderer on or off."""
    spatial_dims = cfg.data.spatial_dims
    backbone = build_backbone(
        cfg.model.backbone, spatial_dims, in_channels, num_classes, **cfg.model.backbone_options
    )
    # ModelConfig is a RendererConfig: the renderer copies its fields (dataclasses.fields)
    return Morse(backbone, num_classes, spatial_dims, renderer=cfg.model.renderer,
                 config=cfg.model)
