"""``MorseRenderer``: the implicit point renderer with stochastic experts, for any backbone.

It takes what a backbone gives (coarse logits and feature maps at S scales) and nothing else,
so it fits into any training loop. Shapes: B images, K classes, S feature scales, P points,
D spatial dims, ``*S`` spatial shape.

Precision: ``render_precision`` (default ``auto``: bf16 where the device has it natively) runs
the point MLPs in bf16, in training and at inference, while coordinates, sampling, the gate
weights and the logits stay fp32; an outer autocast (``train.precision=bf16``) also covers the
backbone. bf16 is there for speed on devices that compute it natively (timings in
docs/explanation/performance.md). Inference there (no autograd) also casts and packs the point
layers' weights once per pass and reads bf16 cell tables (``packed.py``), the same arithmetic
as autocast.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from morse.config import RendererConfig, default_train_points, renderer_config
from morse.renderer.encoding import FourierEncoding
from morse.renderer.experts import ConcatFusion, StochasticExperts
from morse.renderer.head import ImplicitPointHead
from morse.renderer.packed import packed_layers, packing_available
from morse.renderer.points import GridMap, sample_training_points
from morse.renderer.positions import PointCode, PositionTable, cached_table
from morse.renderer.precision import point_precision, uses_bf16
from morse.renderer.reading import PointInputs, RenderGrid, point_rows, prepare_inputs
from morse.renderer.render import plan_render_sizes, step_points, subdivision_render
from morse.shapes import size_min

__all__ = ["MorseRenderer", "PointPrediction", "Rendering", "check_task"]

MLP_ROWS = 2048
"""Rows the point MLPs take at a time without autograd (inference): activations of 2048 x 256
stay in a core's cache, and no large buffer is allocated and touched anew per layer (timings in
docs/explanation/performance.md)."""


class PointPrediction(NamedTuple):
    """What ``MorseRenderer.forward`` returns (training)."""

    logits: torch.Tensor
    """(B, K, P) the head's logits at the points."""
    coords: torch.Tensor
    """(B, P, D) the points in [0, 1] (score them against the label sampled there)."""
    gate: torch.Tensor | None
    """(B, S, P) expert weights at the points (zero for dropped experts); None: experts off."""


class Rendering(NamedTuple):
    """What ``MorseRenderer.render`` returns (inference)."""

    logits: torch.Tensor
    """(B, K, *S_out) rendered logits, fp32."""
    rendered: torch.Tensor
    """(B, 1, *S_out) bool, the cells the renderer re-predicted."""
    gate: torch.Tensor | None
    """(B, S, *S_out) fp32 gate weights at the rendered cells (summing to 1 over S there, the
    last step's where a cell was rendered twice), 0 elsewhere; None: experts off."""


class MorseRenderer(nn.Module):
    """Re-predict labels at continuous points from fine features, coarse logits and position.

    Args:
        feature_channels: c_s of the backbone's S feature maps, coarsest first.
        num_classes: K (background included).
        spatial_dims: D, 2 or 3.
        config: the renderer's options (default: the paper's settings).
        **options: ``RendererConfig`` fields that replace those of ``config``.

    >>> renderer = MorseRenderer([8, 4], num_classes=3, spatial_dims=2, expert_width=16,
    ...                          head_width=16, num_frequencies=4, train_points=10)
    >>> features = [torch.randn(2, 8, 4, 4), torch.randn(2, 4, 8, 8)]
    >>> coarse = torch.randn(2, 3, 8, 8)
    >>> points = renderer(features, coarse)
    >>> points.logits.shape, points.coords.shape, points.gate.shape
    (torch.Size([2, 3, 10]), torch.Size([2, 10, 2]), torch.Size([2, 2, 10]))
    >>> out = renderer.eval().render(features, coarse, output_size=(12, 12))
    >>> out.logits.shape, out.rendered.shape, out.gate.shape
    (torch.Size([2, 3, 12, 12]), torch.Size([2, 1, 12, 12]), torch.Size([2, 2, 12, 12]))
    """

    def __init__(
        self,
        feature_channels: Sequence[int],
        num_classes: int,
        spatial_dims: int,
        config: RendererConfig | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        check_task(num_classes, spatial_dims)
        if not feature_channels:
            raise ValueError(
                "MORSE needs the channels of the backbone's feature maps: pass feature_channels="
                "[...] (coarsest first), give the backbone a feature_channels attribute, or "
                "build it with morse.build_backbone"
            )
        self.feature_channels = [int(channels) for channels in feature_channels]
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.config = cfg = renderer_config(config, **options)
        self.train_points = cfg.train_points or default_train_points(spatial_dims)
        if cfg.experts:
            self.fusion: nn.Module = StochasticExperts(
                self.feature_channels, cfg.expert_width, cfg.max_dropped, cfg.renormalize_gate,
                cfg.stochastic_gating, cfg.dropout,
            )
        else:
            self.fusion = ConcatFusion(self.feature_channels, cfg.expert_width, cfg.dropout)
        self.encoding = (
            FourierEncoding(spatial_dims, cfg.num_frequencies, cfg.fourier_scale)
            if cfg.fourier else None
        )
        head_in = self.fusion.out_channels + (self.encoding.out_channels if cfg.fourier else 0)
        self.head = ImplicitPointHead(head_in, num_classes, cfg.head_width, cfg.head_layers)

    def forward(
        self,
        features: Sequence[torch.Tensor],
        coarse: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> PointPrediction:
        """Training: pick P points (PointRend's importance sampling) and predict them.

        Args:
            features: S maps (B, c_s, *S_s), coarsest first.
            coarse: (B, K, *S) the backbone's logits.
            generator: optional generator for the point draws.

        Returns:
            ``PointPrediction`` (logits (B, K, P), coords (B, P, D), gate (B, S, P) or None),
            logits and gate in fp32 whatever ``render_precision``.
        """
        self.check_inputs(features, coarse)
        cfg = self.config
        coords = sample_training_points(
            coarse, self.train_points, cfg.oversample_ratio, cfg.importance_ratio, generator
        )
        with point_precision(cfg.render_precision, coarse.device):
            logits, gate = self.point_logits(features, coarse, coords)
        return PointPrediction(logits.float(), coords, None if gate is None else gate.float())

    def point_logits(
        self, features: Sequence[torch.Tensor], coarse: torch.Tensor, coords: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The head's logits at given points.

        Args:
            features: S maps (B, c_s, *S_s).
            coarse: (B, K, *S).
            coords: (B, P, D) in [0, 1]; kept fp32 (sampling casts the maps up instead).

        Returns:
            logits (B, K, P) and gate weights (B, S, P) or None when experts are off.
        """
        return _channels_first(*self._point_rows(self.prepare(features, coarse, coords.shape[1]),
                                                 coords))

    def prepare(
        self, features: Sequence[torch.Tensor], coarse: torch.Tensor, num_points: int,
        tables: bool = True, table_dtype: torch.dtype | None = None,
    ) -> PointInputs:
        """The maps to read points from, once for all the points of a pass (any chunking).

        A linear layer commutes with linear interpolation (``grid_sample`` weights sum to 1,
        border padding included), so an expert's first layer can run on its map, cell by
        cell, before sampling: exact up to float rounding, gradients included. It pays where
        the map has fewer cells than there are points per image and at least as many
        channels as the layer's output, so that sampling reads no more channels than before
        (the UNet's coarsest scale). Entering wider-output maps makes sampling read more
        channels than the layer saves (timings in docs/explanation/performance.md).

        Entered maps and small ones are read through cell tables (``prepare_inputs``).

        Args:
            features: S maps (B, c_s, *S_s).
            coarse: (B, K, *S).
            num_points: points per image that will be read (all steps and chunks together).
            tables: False reads every map with ``grid_sample`` and enters none (for export).
            table_dtype: the cell tables' dtype (default fp32).
        """
        return prepare_inputs(self.fusion.entries, features, coarse, num_points, tables,
                              table_dtype)

    def _point_rows(
        self, inputs: PointInputs, coords: torch.Tensor, active: torch.Tensor | None = None,
        chunked: bool = True, positions: PositionTable | PointCode | None = None,
        grid: RenderGrid | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``point_logits`` from prepared maps, as rows: logits (B, P, K), gate (B, P, S) or
        None.

        With ``active`` (B, P) bool, only the active rows are sampled and run through the
        experts and the head (every step works point by point, so their values are those of
        the full pass); the other rows come back as zeros. ``chunked`` False runs all rows
        at once (a graph for any size has no loop over a size). ``positions``: the points'
        code through the head's first layer, from the render grid's table (the points are
        then its cell centres) or point by point; None: the code goes into the head's GEMM.
        ``grid``: the render grid the points are cell centres of (``point_rows``).
        """
        rows, points = point_rows(inputs, coords, active, grid)
        # without autograd, a few thousand rows at a time keep the activations in cache
        step = (None if torch.is_grad_enabled() or not chunked
                else max(1, MLP_ROWS // rows[0].shape[0]))
        logits, gate = _in_chunks(functools.partial(self._mlps, inputs.entered, positions),
                                  [*rows, points], step)
        if active is not None:
            logits, gate = _scatter_rows(logits, active), _scatter_rows(gate, active)
        return logits, gate

    def _mlps(
        self, entered: list[bool], positions: PositionTable | PointCode | None,
        *rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Experts, gate and head on read rows: S map blocks, the coarse logits and the
        points, each (B', P', c) (see ``point_rows``); returns logits (B', P', K) and gate
        (B', P', S) or None."""
        *maps, coarse_rows, points = rows
        # only the experts have per-scale first layers to enter (``fusion.entries``)
        fused, gate = self.fusion(maps, entered) if any(entered) else self.fusion(maps)
        if positions is not None:
            return self.head([fused], coarse_rows, lead=positions.rows(points)), gate
        code = [] if self.encoding is None else [self.encoding(points)]
        return self.head([*code, fused], coarse_rows), gate

    def render(
        self,
        features: Sequence[torch.Tensor],
        coarse: torch.Tensor,
        output_size: Sequence[int] | None = None,
        grid_map: GridMap | None = None,
        *,
        static_shapes: bool = False,
    ) -> Rendering:
        """Inference: subdivision rendering (see ``subdivision_render``), chunked if asked.

        The budget is adaptive by default: only cells whose coarse margin is below
        ``render_margin`` are rendered, at most N per step, N capped by ``render_share``.

        Args:
            features: S maps (B, c_s, *S_s), coarsest first.
            coarse: (B, K, *S) the backbone's logits.
            output_size: the grid to render on; default the coarse grid (2^steps times it
                with ``render_upsample``).
            grid_map: where the ``output_size`` grid lies over the coarse map (a scan's own
                voxels, see ``subdivision_render``); None: it covers the map exactly.
            static_shapes: run the point network on all N rows of every step, the rows of
                certain or already rendered cells included, and discard those; every shape
                then follows from the input's (for export). Same cells and values.

        Returns:
            ``Rendering`` (logits (B, K, *S_out), rendered (B, 1, *S_out) bool, gate
            (B, S, *S_out), zeros where nothing was rendered; None with experts off).
        """
        self.check_inputs(features, coarse)
        cfg = self.config
        upsample = cfg.render_upsample and grid_map is None
        sizes = plan_render_sizes(coarse.shape[2:], cfg.render_steps, upsample, output_size)
        budget = sum(size_min(step_points(cfg.render_points, size, cfg.render_share),
                              math.prod(size)) for size in sizes)
        # bf16 inference on a CPU: packed bf16 layers, fed from bf16 tables
        pack = (not static_shapes and not torch.is_grad_enabled()
                and uses_bf16(cfg.render_precision, coarse.device)
                and packing_available(coarse.device))
        inputs = self.prepare(features, coarse, budget, not static_shapes,
                              torch.bfloat16 if pack else None)
        # one grid for every step (no upsampling): its cells are what the points are
        grid = None if static_shapes or upsample or not sizes else RenderGrid(
            tuple(int(n) for n in sizes[-1]), grid_map)
        positions = None
        if grid is not None and not torch.is_grad_enabled() and self.encoding is not None:
            positions = cached_table(self, self.encoding, self.head.layers[0], grid.size,
                                     grid_map, budget * coarse.shape[0])
        point_fn = functools.partial(self._point_logits, inputs, chunked=not static_shapes,
                                     positions=positions, grid=grid)
        with point_precision(cfg.render_precision, coarse.device), \
                packed_layers(self, MLP_ROWS, enabled=pack):
            logits, rendered, gate = subdivision_render(
                coarse, point_fn, cfg.render_points, cfg.render_steps, upsample,
                output_size, cfg.render_margin, cfg.render_share,
                static_shapes=static_shapes, grid_map=grid_map,
            )
        if gate is None and cfg.experts:  # no cell was uncertain enough: an all-zero map
            gate = logits.new_zeros(logits.shape[0], len(self.feature_channels),
                                    *logits.shape[2:])
        return Rendering(logits, rendered, gate)

    def _point_logits(
        self, inputs: PointInputs, coords: torch.Tensor, active: torch.Tensor | None = None,
        chunked: bool = True, positions: PositionTable | PointCode | None = None,
        grid: RenderGrid | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``render``'s point function: ``_point_rows`` on at most ``render_chunk`` points at
        a time (bounds memory; ``chunked`` False: all at once); logits (B, K, P), gate
        (B, S, P) or None."""
        rows = functools.partial(self._point_rows, inputs, chunked=chunked, positions=positions,
                                 grid=grid)
        return _channels_first(*_in_chunks(rows, [coords, active],
                                           self.config.render_chunk if chunked else None))

    def check_inputs(self, features: Sequence[torch.Tensor], coarse: torch.Tensor) -> None:
        """Raise with the fix when the maps do not match what the renderer was built for."""
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


def check_task(num_classes: int, spatial_dims: int) -> None:
    """Raise unless K >= 2 and D is 2 or 3."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")


def _in_chunks(
    fn: Callable[..., tuple[torch.Tensor | None, ...]],
    tensors: Sequence[torch.Tensor | None],
    size: int | None,
) -> tuple[torch.Tensor | None, ...]:
    """``fn(*tensors)`` on at most ``size`` points at a time (None: all at once).

    Every tensor (B', P', ...) is cut along its point axis, 1 (None passes as None), and the
    outputs (B', P', ...) are concatenated along it (None stays None).
    """
    length = tensors[0].shape[1]
    if size is None or length <= size:
        return fn(*tensors)
    parts = [fn(*(None if tensor is None else tensor.narrow(1, start, min(size, length - start))
                  for tensor in tensors))
             for start in range(0, length, size)]
    return tuple(None if outputs[0] is None else torch.cat(outputs, 1) for outputs in zip(*parts))


def _channels_first(
    logits: torch.Tensor, gate: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows (B, P, K) and (B, P, S) -> (B, K, P) and (B, S, P), as views."""
    return logits.transpose(1, 2), None if gate is None else gate.transpose(1, 2)


def _scatter_rows(values: torch.Tensor | None, active: torch.Tensor) -> torch.Tensor | None:
    """(1, M, C) values of the M active rows -> (B, P, C), zeros on the inactive rows."""
    if values is None:
        return None
    out = values.new_zeros(*active.shape, values.shape[-1])
    out[active] = values[0]
    return out
