"""``MorseUNet``: nnU-Net's planned U-Net with MORSE's renderer on its decoder.

nnU-Net's ``PlainConvUNet`` and ``ResidualEncoderUNet`` (dynamic_network_architectures) share one
decoder: ``decoder.stages[s]`` (coarsest first), fed by ``decoder.transpconvs[s]`` and the
encoder's skips, with a 1x1 ``decoder.seg_layers[s]`` per stage for deep supervision. This
module runs that decoder step by step so that it can hand every stage's output to the renderer
and still return the deep-supervision outputs nnU-Net's loss wants. Shapes: B images, K
classes, ``*S`` the patch's spatial shape.

The encoder and decoder are this module's own ``encoder`` and ``decoder``, so its state dict has
the planned network's keys unchanged plus ``renderer.*``: a plain nnU-Net checkpoint loads into
it (the renderer starting fresh) and nnU-Net's ``set_deep_supervision_enabled`` (which sets
``network.decoder.deep_supervision``) works as for the plain network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from morse.errors import ConfigError
from morse.renderer import MorseRenderer, PointPrediction, RendererConfig, Rendering

__all__ = ["DEFAULT_SCALES", "MorseUNet", "TrainingOutputs", "check_unrollable"]

DEFAULT_SCALES = 5
"""Feature scales handed to the renderer: the finest five maps of [bottleneck, decoder stages],
the paper's count (its UNet's strides 16, 8, 4, 2, 1); coarser maps of deep 2D plans (4 x 4
cells) add little where points are read."""


class TrainingOutputs(list):
    """The deep-supervision outputs (full resolution first), as nnU-Net's loss takes them, and
    ``points``, the renderer's prediction at this step's points, for the point loss."""

    points: PointPrediction | None = None


class Decoded(NamedTuple):
    """One pass through encoder and decoder."""

    outputs: list[torch.Tensor]
    """Segmentation logits, full resolution first (one entry without deep supervision)."""
    features: list[torch.Tensor]
    """The maps the renderer reads, coarsest first."""


def check_unrollable(network: nn.Module) -> None:
    """Raise ``ConfigError`` unless ``network`` has nnU-Net's U-Net decoder
    (``encoder``, ``decoder.stages``, ``decoder.transpconvs``, ``decoder.seg_layers``)."""
    decoder = getattr(network, "decoder", None)
    parts = ("stages", "transpconvs", "seg_layers")
    if getattr(network, "encoder", None) is None or not all(
        isinstance(getattr(decoder, part, None), nn.ModuleList) for part in parts
    ):
        raise ConfigError(
            f"MORSE reads the decoder of nnU-Net's U-Nets (PlainConvUNet, ResidualEncoderUNet); "
            f"{type(network).__name__} has no encoder/decoder.stages/transpconvs/seg_layers "
            "(Primus and other transformer plans are not supported yet)"
        )


class MorseUNet(nn.Module):
    """An nnU-Net U-Net whose full-resolution logits MORSE's renderer refines.

    Args:
        network: a ``PlainConvUNet`` or ``ResidualEncoderUNet`` (or any network with their
            encoder and decoder); its ``encoder`` and ``decoder`` become this module's.
        num_classes: K, the network's output channels.
        scales: how many feature maps the renderer reads, the finest of [bottleneck, decoder
            stage outputs].
        config: the renderer's options (default: the paper's settings).
        **options: ``RendererConfig`` fields replacing those of ``config``.

    Training mode returns ``TrainingOutputs``: nnU-Net's outputs (a list, full resolution
    first; one entry when ``decoder.deep_supervision`` is off) and ``points``. Eval mode
    returns what the plain network returns with the full-resolution logits replaced by the
    rendered ones: a tensor (B, K, *S) without deep supervision (nnU-Net's predictor and final
    validation), else that list.
    """

    def __init__(
        self,
        network: nn.Module,
        num_classes: int,
        scales: int = DEFAULT_SCALES,
        config: RendererConfig | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        check_unrollable(network)
        self.encoder = network.encoder
        self.decoder = network.decoder
        self.encoder.return_skips = True
        widths = [int(c) for c in self.encoder.output_channels]
        # [bottleneck, decoder stage 0, 1, ...]: stage s outputs the width of skip -(s + 2)
        maps = [widths[-1]] + [widths[-(s + 2)] for s in range(len(self.decoder.stages))]
        if scales < 1:
            raise ConfigError(f"scales must be >= 1, got {scales}")
        self.scales = min(scales, len(maps))
        self.spatial_dims = len(self.encoder.strides[0])
        self.renderer = MorseRenderer(
            maps[-self.scales:], num_classes, self.spatial_dims, config, **options
        )

    def decode(self, image: torch.Tensor, deep_supervision: bool) -> Decoded:
        """``image`` (B, C, *S) through encoder and decoder, as ``UNetDecoder.forward`` runs
        them, keeping every stage's output."""
        skips = self.encoder(image)
        low = skips[-1]
        maps = [low]
        outputs = []
        last = len(self.decoder.stages) - 1
        for s, (up, stage) in enumerate(zip(self.decoder.transpconvs, self.decoder.stages)):
            low = stage(torch.cat((up(low), skips[-(s + 2)]), 1))
            maps.append(low)
            if deep_supervision:
                outputs.append(self.decoder.seg_layers[s](low))
            elif s == last:
                outputs.append(self.decoder.seg_layers[-1](low))
        return Decoded(outputs[::-1], maps[-self.scales:])

    def forward(self, image: torch.Tensor) -> TrainingOutputs | list[torch.Tensor] | torch.Tensor:
        deep = bool(self.decoder.deep_supervision)
        outputs, features = self.decode(image, deep)
        if self.training:
            result = TrainingOutputs(outputs)
            result.points = self.renderer(features, outputs[0])
            return result
        rendered = self.renderer.render(features, outputs[0]).logits.to(outputs[0].dtype)
        return [rendered, *outputs[1:]] if deep else rendered

    def render(self, image: torch.Tensor) -> tuple[torch.Tensor, Rendering]:
        """Eval: the backbone's full-resolution logits (B, K, *S) and the ``Rendering``."""
        outputs, features = self.decode(image, deep_supervision=False)
        return outputs[0], self.renderer.render(features, outputs[0])

    @property
    def feature_channels(self) -> Sequence[int]:
        """Channels of the maps the renderer reads, coarsest first."""
        return self.renderer.feature_channels
