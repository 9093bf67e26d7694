"""``Morse``: put the implicit renderer with stochastic experts on any segmentation backbone.

Shapes: B images, C_in image channels, K classes, S feature scales, P points, D spatial dims.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from morse.backbone.checks import check_image
from morse.backbone.hooks import FeatureTap
from morse.config import RendererConfig, renderer_config
from morse.renderer.module import MorseRenderer, check_task
from morse.renderer.points import GridMap
from morse.renderer.render import subdivision_render

__all__ = ["Morse", "MorseOutput"]


@dataclass
class MorseOutput:
    """What ``Morse.forward`` returns.

    Attributes:
        coarse: (B, K, *S) the backbone's logits.
        logits: (B, K, *S_out) rendered logits (fp32) at inference; in training (no
            rendering) and with the renderer off, the coarse logits.
        point_logits: (B, K, P) head logits at the training points (training only).
        point_coords: (B, P, D) the training points in [0, 1] (training only).
        gate: which scale decides where; None with the renderer or the experts off.
            Training: (B, S, P) expert weights at the points (zero for dropped experts).
            Inference: (B, S, *S_out) fp32 map of the weights at the rendered cells (they sum
            to 1 over S there; the last step's weights where a cell was rendered twice) and
            0 at every cell not rendered.
        rendered: (B, 1, *S_out) bool, the cells the renderer re-predicted (inference only).
    """

    coarse: torch.Tensor
    logits: torch.Tensor
    point_logits: torch.Tensor | None = None
    point_coords: torch.Tensor | None = None
    gate: torch.Tensor | None = None
    rendered: torch.Tensor | None = None


class Morse(nn.Module):
    """A backbone plus MORSE's implicit point renderer (``MorseRenderer``).

    The backbone either returns ``(logits, [features coarsest..finest])`` and declares
    ``feature_channels``, or returns plain logits and ``feature_modules`` names the submodules
    whose outputs are the features (they are tapped with forward hooks).

    Args:
        backbone: the segmentation network.
        num_classes: K (background included).
        spatial_dims: D, 2 or 3.
        feature_modules: names of the backbone's submodules to tap, coarsest first.
        feature_channels: c_s of each feature map; read from ``backbone.feature_channels``
            when omitted.
        probe_input: with ``feature_modules`` and no ``feature_channels``, an example input
            (1, C_in, *S) run once to measure the tapped maps' channels.
        renderer: False gives the plain backbone in the same training loop.
        config: the renderer's options (``RendererConfig``; default: the paper's settings).
        **options: ``RendererConfig`` fields replacing those of ``config``, e.g.
            ``experts=False`` or ``render_points=4096``.

    Attributes:
        renderer: the ``MorseRenderer``, or None with ``renderer=False``.

    >>> from morse.backbone.unet import UNet
    >>> model = Morse(UNet(2, 1, 3, width=0.25), num_classes=3, spatial_dims=2).eval()
    >>> out = model(torch.randn(1, 1, 32, 32))
    >>> out.coarse.shape, out.logits.shape, out.gate.shape
    (torch.Size([1, 3, 32, 32]), torch.Size([1, 3, 32, 32]), torch.Size([1, 5, 32, 32]))
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        spatial_dims: int,
        *,
        feature_modules: Sequence[str] | None = None,
        feature_channels: Sequence[int] | None = None,
        probe_input: torch.Tensor | None = None,
        renderer: bool = True,
        config: RendererConfig | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        check_task(num_classes, spatial_dims)
        if feature_modules is not None:
            backbone = FeatureTap(backbone, feature_modules, feature_channels, probe_input)
        self.backbone = backbone
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        config = renderer_config(config, **options)  # checked even with the renderer off
        channels = feature_channels or getattr(backbone, "feature_channels", None) or []
        self.renderer = (
            MorseRenderer(channels, num_classes, spatial_dims, config) if renderer else None
        )

    def forward(
        self,
        image: torch.Tensor,
        output_size: Sequence[int] | None = None,
        grid_map: GridMap | None = None,
    ) -> MorseOutput:
        """Segment a batch.

        Args:
            image: (B, C_in, *S) float.
            output_size: inference only: render on this grid instead of the default one
                (e.g. the original scan's).
            grid_map: inference only: where the ``output_size`` grid lies over the input
                (``morse.renderer.points.GridMap``); None: it covers the input exactly.

        Returns:
            ``MorseOutput``.
        """
        coarse, features = self.backbone_outputs(image)
        if not self.training:
            return self.render(coarse, features, output_size, grid_map)
        if self.renderer is None:
            return MorseOutput(coarse=coarse, logits=coarse)
        points = self.renderer(features, coarse)
        return MorseOutput(coarse, coarse, points.logits, points.coords, points.gate)

    def backbone_outputs(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The backbone's coarse logits (B, K, *S) and S feature maps (B, c_s, *S_s),
        coarsest first (none for a backbone that gives only logits and is not tapped)."""
        check_image(image, spatial_dims=self.spatial_dims, in_channels=None, name="MORSE")
        return _split_backbone_output(self.backbone(image))

    def render(
        self,
        coarse: torch.Tensor,
        features: Sequence[torch.Tensor],
        output_size: Sequence[int] | None = None,
        grid_map: GridMap | None = None,
        *,
        static_shapes: bool = False,
    ) -> MorseOutput:
        """Inference from the backbone's outputs (``forward`` in eval mode is
        ``render(*backbone_outputs(image))``).

        Args:
            coarse: (B, K, *S) logits; the coarse output and what the renderer ranks by.
            features: S maps (B, c_s, *S_s), coarsest first.
            output_size: the grid to render on (default: the coarse grid, 2^steps times it
                with ``render_upsample``).
            grid_map: where the ``output_size`` grid lies over the input
                (``morse.renderer.points.GridMap``); None: it covers the input exactly.
            static_shapes: every tensor's shape follows from the input's alone (see
                ``subdivision_render``), for export; same cells and values.

        Returns:
            ``MorseOutput`` with ``logits`` (B, K, *S_out) and, with the renderer on,
            ``rendered`` and ``gate``.
        """
        if self.renderer is None:
            logits = coarse
            if output_size is not None:
                logits = subdivision_render(coarse, None, 0, 0, output_size=output_size,
                                            grid_map=grid_map)[0]
            return MorseOutput(coarse=coarse, logits=logits)
        logits, rendered, gate = self.renderer.render(features, coarse, output_size, grid_map,
                                                      static_shapes=static_shapes)
        return MorseOutput(coarse=coarse, logits=logits, gate=gate, rendered=rendered)


def _split_backbone_output(output: object) -> tuple[torch.Tensor, list[torch.Tensor]]:
    if isinstance(output, torch.Tensor):
        return output, []
    if isinstance(output, (tuple, list)) and len(output) == 2:
        logits, features = output
        if isinstance(logits, torch.Tensor) and isinstance(features, (list, tuple)):
            return logits, list(features)
    raise TypeError(
        "the backbone must return logits or a pair (logits, [feature maps]); got "
        f"{type(output).__name__}. Use feature_modules=[...] to tap a network that returns "
        "only logits"
    )
