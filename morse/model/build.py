"""Build the model a config describes, and check that it can be built before any data is
prepared."""

from __future__ import annotations

import torch

from morse.backbone import build_backbone
from morse.config import Config
from morse.errors import ConfigError
from morse.model.module import Morse

__all__ = ["build_model", "check_buildable"]


def build_model(cfg: Config, in_channels: int, num_classes: int) -> Morse:
    """The backbone named in ``cfg.model`` with the renderer on or off."""
    spatial_dims = cfg.data.spatial_dims
    backbone = build_backbone(
        cfg.model.backbone, spatial_dims, in_channels, num_classes, **cfg.model.backbone_options
    )
    # ModelConfig is a RendererConfig: the renderer copies its fields (dataclasses.fields)
    return Morse(backbone, num_classes, spatial_dims, renderer=cfg.model.renderer,
                 config=cfg.model)


def check_buildable(cfg: Config, origin: str = "config") -> None:
    """Build the backbone once on the meta device (no memory taken, no weights read) and run
    it on the training size, so a typo'd or impossible ``model.backbone_options`` or a slice or
    patch size the backbone cannot take fails in one line before the data is prepared."""
    options = {k: v for k, v in cfg.model.backbone_options.items() if k != "pretrained"}
    try:
        with torch.device("meta"):
            backbone = build_backbone(cfg.model.backbone, cfg.data.spatial_dims, 1, 2, **options)
    except (TypeError, ValueError, KeyError, AssertionError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"{origin}: model.backbone_options {options} do not build a "
            f"{cfg.data.spatial_dims}D {cfg.model.backbone} ({detail}); see the backbone's "
            "options in docs/reference/configuration.md"
        ) from None
    size = cfg.data.slice_size if cfg.data.spatial_dims == 2 else cfg.data.patch_size
    if size is not None:
        try:  # shapes only: the meta device computes no values
            with torch.device("meta"):  # eval: batch norm takes a batch of one
                backbone.eval()(torch.empty(1, 1, *size))
        except NotImplementedError:  # an operator without a meta kernel: nothing to learn
            return
        except (ValueError, RuntimeError) as error:
            key = "slice_size" if cfg.data.spatial_dims == 2 else "patch_size"
            detail = str(error).splitlines()[0]
            raise ConfigError(f"{origin}: data.{key} {list(size)}: {detail}") from None
