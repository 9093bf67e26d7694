"""``Morse``: put the implicit renderer with stochastic experts on any segmentation backbone.

Shapes: B images, C_in image channels, K classes, S feature scales, P points, D spatial dims.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from morse.renderer.encoding import FourierEncoding
from morse.renderer.experts import ConcatFusion, StochasticExperts
from morse.renderer.head import ImplicitPointHead
from morse.renderer.points import point_sample, sample_training_points
from morse.renderer.render import subdivision_render

__all__ = ["Morse", "MorseOutput", "default_train_points"]


def default_train_points(spatial_dims: int) -> int:
    """Training points per image: the paper's 2048 in 2D; 8192 for 3D patches (e.g. 96^3).

    A 3D patch has far more boundary than a 2D slice, so it gets four times the points; this
    stays below 1% of a 96^3 patch, which keeps the head's cost small next to the backbone's.
    """
    return 2048 if spatial_dims == 2 else 8192


@dataclass
class MorseOutput:
    """What ``Morse.forward`` returns.

    Attributes:
        coarse: (B, K, *S) the backbone's logits.
        logits: (B, K, *S_out) rendered logits at inference; in training (no rendering) and
            with the renderer off, the coarse logits.
        point_logits: (B, K, P) head logits at the training points (training only).
        point_coords: (B, P, D) the training points in [0, 1] (training only).
        gate: (B, S, P) expert weights at the points (training with experts on only).
        rendered: (B, 1, *S_out) bool, the cells the renderer re-predicted (inference only).
    """

    coarse: torch.Tensor
    logits: torch.Tensor
    point_logits: torch.Tensor | None = None
    point_coords: torch.Tensor | None = None
    gate: torch.Tensor | None = None
    rendered: torch.Tensor | None = None


class Morse(nn.Module):
    """A backbone plus MORSE's implicit point renderer.

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
        experts: False fuses the scales by concatenation instead of the mixture of experts.
        stochastic_gating: drop a random number of experts per training step.
        renormalize_gate: renormalise the surviving gate weights (default True; the authors'
            code does not, see ``StochasticExperts``).
        max_dropped: r_max, the most experts dropped in one step (default S - 1).
        fourier: feed the Fourier-encoded coordinate to the head (False: PointRend's head).
        train_points: P per image in training (default ``default_train_points``).
        oversample_ratio, importance_ratio: PointRend's k and beta for training points.
        render_points: cells re-predicted per inference step (paper: 8192).
        render_steps: inference steps (paper: 2).
        render_upsample: double the grid at each inference step.
        render_chunk: render at most this many points per head call (bounds memory).
        expert_width, head_width, head_layers, num_frequencies, fourier_scale, dropout:
            sizes of the renderer (paper: 256, 256, 3, 128, 1.0, 0.1).

    >>> from morse.backbone.unet import UNet
    >>> model = Morse(UNet(2, 1, 3, width=0.25), num_classes=3, spatial_dims=2).eval()
    >>> out = model(torch.randn(1, 1, 32, 32))
    >>> out.coarse.shape, out.logits.shape
    (torch.Size([1, 3, 32, 32]), torch.Size([1, 3, 32, 32]))
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
        experts: bool = True,
        stochastic_gating: bool = True,
        renormalize_gate: bool = True,
        max_dropped: int | None = None,
        fourier: bool = True,
        train_points: int | None = None,
        oversample_ratio: float = 3.0,
        importance_ratio: float = 0.75,
        render_points: int = 8192,
        render_steps: int = 2,
        render_upsample: bool = False,
        render_chunk: int | None = None,
        expert_width: int = 256,
        head_width: int = 256,
        head_layers: int = 3,
        num_frequencies: int = 128,
        fourier_scale: float = 1.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
        if feature_modules is not None:
            from morse.backbone.hooks import FeatureTap

            backbone = FeatureTap(backbone, feature_modules, feature_channels, probe_input)
        self.backbone = backbone
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.feature_channels = (
            _resolve_feature_channels(backbone, feature_channels) if renderer else []
        )
        self.use_renderer = renderer
        self.train_points = train_points or default_train_points(spatial_dims)
        self.oversample_ratio = oversample_ratio
        self.importance_ratio = importance_ratio
        self.render_points = render_points
        self.render_steps = render_steps
        self.render_upsample = render_upsample
        self.render_chunk = render_chunk
        if not renderer:
            return
        if experts:
            self.fusion: nn.Module = StochasticExperts(
                self.feature_channels, expert_width, max_dropped, renormalize_gate,
                stochastic_gating, dropout,
            )
        else:
            self.fusion = ConcatFusion(self.feature_channels, expert_width, dropout)
        self.encoding = (
            FourierEncoding(spatial_dims, num_frequencies, fourier_scale) if fourier else None
        )
        head_in = self.fusion.out_channels + (self.encoding.out_channels if fourier else 0)
        self.head = ImplicitPointHead(head_in, num_classes, head_width, head_layers)

    def forward(
        self, image: torch.Tensor, output_size: Sequence[int] | None = None
    ) -> MorseOutput:
        """Segment a batch.

        Args:
            image: (B, C_in, *S) float.
            output_size: inference only: render on this grid instead of the default one
                (e.g. the original scan's).

        Returns:
            ``MorseOutput``.
        """
        _check_image(image, self.spatial_dims)
        coarse, features = _split_backbone_output(self.backbone(image))
        if not self.use_renderer:
            logits = coarse
            if output_size is not None and not self.training:
                logits = subdivision_render(coarse, None, 0, 0, output_size=output_size)[0]
            return MorseOutput(coarse=coarse, logits=logits)
        self._check_features(features, coarse)
        if self.training:
            coords = sample_training_points(
                coarse, self.train_points, self.oversample_ratio, self.importance_ratio
            )
            point_logits, gate = self.point_logits(features, coarse, coords)
            return MorseOutput(coarse, coarse, point_logits, coords, gate)
        logits, rendered = self.render(coarse, features, output_size)
        return MorseOutput(coarse=coarse, logits=logits, rendered=rendered)

    def point_logits(
        self, features: Sequence[torch.Tensor], coarse: torch.Tensor, coords: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The head's logits at points.

        Args:
            features: S maps (B, c_s, *S_s).
            coarse: (B, K, *S).
            coords: (B, P, D) in [0, 1].

        Returns:
            logits (B, K, P) and gate weights (B, S, P) or None when experts are off.
        """
        fused, gate = self.fusion([point_sample(maps, coords) for maps in features])
        coarse_at_points = point_sample(coarse, coords)
        fine = fused if self.encoding is None else torch.cat([self.encoding(coords), fused], 1)
        return self.head(fine, coarse_at_points), gate

    def render(
        self,
        coarse: torch.Tensor,
        features: Sequence[torch.Tensor],
        output_size: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Subdivision rendering (see ``subdivision_render``), in chunks of points if asked.

        Returns:
            logits (B, K, *S_out) and the rendered-cell map (B, 1, *S_out).
        """

        def point_fn(coords: torch.Tensor) -> torch.Tensor:
            chunk = self.render_chunk or coords.shape[1]
            parts = [
                self.point_logits(features, coarse, part)[0] for part in coords.split(chunk, 1)
            ]
            return torch.cat(parts, dim=2)

        return subdivision_render(
            coarse, point_fn, self.render_points, self.render_steps, self.render_upsample,
            output_size,
        )[:2]

    def _check_features(self, features: Sequence[torch.Tensor], coarse: torch.Tensor) -> None:
        if len(features) != len(self.feature_channels):
            raise ValueError(
                f"the backbone returned {len(features)} feature maps but MORSE was built for "
                f"{len(self.feature_channels)} (channels {list(self.feature_channels)}); pass "
                "feature_channels matching the backbone's features"
            )
        for index, (maps, channels) in enumerate(zip(features, self.feature_channels)):
            if maps.dim() != self.spatial_dims + 2:
                raise ValueError(
                    f"feature map {index} has shape {tuple(maps.shape)}: expected "
                    f"{self.spatial_dims + 2} dims (B, C, *spatial) for spatial_dims="
                    f"{self.spatial_dims}"
                )
            if maps.shape[1] != channels:
                raise ValueError(
                    f"feature map {index} has {maps.shape[1]} channels but MORSE was built for "
                    f"{channels}; feature_channels must list the maps' channels coarsest first"
                )
        if coarse.shape[1] != self.num_classes:
            raise ValueError(
                f"the backbone's logits have {coarse.shape[1]} channels but num_classes is "
                f"{self.num_classes}"
            )


def _resolve_feature_channels(
    backbone: nn.Module, feature_channels: Sequence[int] | None
) -> list[int]:
    if feature_channels is None:
        feature_channels = getattr(backbone, "feature_channels", None)
    if not feature_channels:
        raise ValueError(
            "MORSE needs the channels of the backbone's feature maps: pass feature_channels="
            "[...] (coarsest first), give the backbone a feature_channels attribute, or build "
            "it with morse.build_backbone"
        )
    return [int(channels) for channels in feature_channels]


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


def _check_image(image: torch.Tensor, spatial_dims: int) -> None:
    if not torch.is_floating_point(image):
        raise TypeError(
            f"the image tensor has dtype {image.dtype}; MORSE expects floating point: convert "
            "it with image.float() (and normalise intensities)"
        )
    if image.dim() != spatial_dims + 2:
        raise ValueError(
            f"the image has shape {tuple(image.shape)}; a {spatial_dims}D model expects "
            f"(B, C, {', '.join('HWD'[:spatial_dims])})"
        )
