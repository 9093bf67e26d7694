"""``RendererConfig``: every option of MORSE's renderer, declared once.

``MorseRenderer`` and ``Morse`` are built from it, and the run configuration's ``model``
section inherits it (``morse.config.ModelConfig``), so a YAML key such as
``model.render_points`` is this class's field of the same name, with the same rule and the
same message when a value breaks it.

>>> RendererConfig(expert_width=0)
Traceback (most recent call last):
...
morse.errors.ConfigError: expert_width must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from morse.config.choices import RENDER_PRECISIONS
from morse.config.rules import Checked, rule

__all__ = ["RendererConfig", "default_train_points", "renderer_config"]


def default_train_points(spatial_dims: int) -> int:
    """Training points per image: the paper's 2048 in 2D; 8192 for 3D patches (e.g. 96^3).

    A 3D patch has far more boundary than a 2D slice, so it gets four times the points; this
    stays below 1% of a 96^3 patch, which keeps the head's cost small next to the backbone's.

    >>> default_train_points(2), default_train_points(3)
    (2048, 8192)
    """
    return 2048 if spatial_dims == 2 else 8192


@dataclass
class RendererConfig(Checked):
    """The renderer's switches and sizes (defaults: the paper's settings)."""

    experts: bool = True
    """Fuse the feature scales with the mixture of experts (False: concatenate, one MLP)."""
    stochastic_gating: bool = True
    """Drop a random number of experts per training step (no effect at inference)."""
    renormalize_gate: bool = True
    """Renormalise the surviving gate weights to sum to 1 (the authors' code does not)."""
    max_dropped: int | None = field(default=None, metadata=rule(minimum=0))
    """r_max, the most experts dropped in one step; None: S - 1 (one always survives)."""
    fourier: bool = True
    """Feed the Fourier-encoded coordinate to the head (False: PointRend's point head)."""
    train_points: int | None = field(default=None, metadata=rule(minimum=1))
    """P, training points per image; None: ``default_train_points`` (2048 2D, 8192 3D)."""
    oversample_ratio: float = field(default=3.0, metadata=rule(minimum=1))
    """PointRend's k >= 1: draw k P uniform candidates before keeping the uncertain ones."""
    importance_ratio: float = field(default=0.75, metadata=rule(minimum=0, maximum=1))
    """PointRend's beta in [0, 1]: the share of points taken from the most uncertain."""
    render_points: int = field(default=8192, metadata=rule(minimum=1))
    """N, the most cells re-predicted per inference step (paper: 8192; see ``render_share``
    and ``render_margin``). On one grid, the steps render the N next cells of one ranking:
    at most ``render_steps`` x N cells in all, never one twice."""
    render_steps: int = field(default=2, metadata=rule(minimum=0))
    """Inference steps (paper: 2). Without ``render_upsample`` two steps of N points render
    exactly what one step of 2N does: rendered cells are left out of the next ranking and the
    others keep their logits, so rendered values never re-rank cells on the same grid."""
    render_margin: float | None = field(default=3.0, metadata=rule(above=0))
    """Adaptive budget: a cell whose coarse top-2 logit margin (largest minus second largest)
    is at least this is certain, keeps its coarse value and is not rendered; each step renders
    only uncertain cells, up to N. None: the paper's fixed budget (N cells per step, however
    certain). The default 3.0 is where, on trained demo models, cells stopped flipping label
    when rendered (``python -m benchmarks margins``; docs/explanation/performance.md). A
    trained run predicts with the margin calibrated for it where it has one
    (``morse.model.calibration``)."""
    render_share: float | None = field(default=0.125, metadata=rule(above=0, maximum=1))
    """The most cells one step may render, as a share of its grid: N per step is
    min(``render_points``, share x cells), at least 1. 0.125 keeps the paper's 8192 on
    256x256 slices and scales N down on smaller grids, where a fixed N would re-predict most
    of a small slice. None: N whatever the grid's size."""
    render_upsample: bool = False
    """Double the grid at each inference step (PointRend); the rendered values are then
    interpolated onto the finer grid and do take part in the next step's ranking."""
    render_chunk: int | None = field(default=None, metadata=rule(minimum=1))
    """Run the head on at most this many points at a time (bounds memory); None: all."""
    render_precision: str = field(default="auto", metadata=rule(choices=RENDER_PRECISIONS))
    """fp32 | bf16 | auto: the point MLPs (experts, gate, head) in training and at inference;
    auto: bf16 where the device computes it natively (CUDA from Ampere on, CPUs with
    AVX512-BF16 or AMX), fp32 elsewhere.

    Coordinates, sampling, the gate weights, the point logits and the rendered maps stay
    fp32. Speed and accuracy against fp32 are in docs/explanation/performance.md and
    results.md; fp32 makes results identical across machines."""
    expert_width: int = field(default=256, metadata=rule(minimum=1))
    """Width of each expert's two layers and of the fused feature (paper: 256)."""
    head_width: int = field(default=256, metadata=rule(minimum=1))
    """Width of the implicit head's hidden layers (paper: 256)."""
    head_layers: int = field(default=3, metadata=rule(minimum=1))
    """Hidden layers of the implicit head (paper: 3)."""
    num_frequencies: int = field(default=128, metadata=rule(minimum=1))
    """F, Fourier frequencies; the encoding has 2F channels (paper: 128 -> 256)."""
    fourier_scale: float = 1.0
    """Standard deviation of the Fourier matrix; larger resolves finer detail."""
    dropout: float = field(default=0.1, metadata=rule(minimum=0, below=1))
    """Dropout after the fusion MLP (paper: 0.1)."""


def renderer_config(config: RendererConfig | None = None, **options: Any) -> RendererConfig:
    """``config`` (default: the paper's settings) with ``options`` replacing its fields.

    >>> renderer_config(render_points=4096).render_points
    4096
    >>> renderer_config(render_point=1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: unknown renderer option 'render_point'; did you mean 'render_points'? ...
    """
    names = [item.name for item in dataclasses.fields(RendererConfig)]
    for key in options:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"unknown renderer option {key!r}{hint} (the options are RendererConfig's "
                f"fields: {', '.join(names)})"
            )
    base = config if config is not None else RendererConfig()
    fields = {name: getattr(base, name) for name in names}
    return RendererConfig(**{**fields, **options})
