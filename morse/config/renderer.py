"""``RendererConfig``: every option of MORSE's renderer, declared once.

``MorseRenderer`` and ``Morse`` are built from it, and the run configuration's ``model``
section inherits it (``morse.config.ModelConfig``), so a YAML key such as
``model.render_points`` is this class's field of the same name.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

__all__ = ["RendererConfig", "default_train_points", "renderer_config"]


RENDER_PRECISIONS = ("fp32", "bf16", "auto")


def default_train_points(spatial_dims: int) -> int:
    """Training points per image: the paper's 2048 in 2D; 8192 for 3D patches (e.g. 96^3).

    A 3D patch has far more boundary than a 2D slice, so it gets four times the points; this
    stays below 1% of a 96^3 patch, which keeps the head's cost small next to the backbone's.

    >>> default_train_points(2), default_train_points(3)
    (2048, 8192)
    """
    return 2048 if spatial_dims == 2 else 8192


@dataclass
class RendererConfig:
    """The renderer's switches and sizes (defaults: the paper's settings)."""

    experts: bool = True
    """Fuse the feature scales with the mixture of experts (False: concatenate, one MLP)."""
    stochastic_gating: bool = True
    """Drop a random number of experts per training step (no effect at inference)."""
    renormalize_gate: bool = True
    """Renormalise the surviving gate weights to sum to 1 (the authors' code does not)."""
    max_dropped: int | None = None
    """r_max, the most experts dropped in one step; None: S - 1 (one always survives)."""
    fourier: bool = True
    """Feed the Fourier-encoded coordinate to the head (False: PointRend's point head)."""
    train_points: int | None = None
    """P, training points per image; None: ``default_train_points`` (2048 2D, 8192 3D)."""
    oversample_ratio: float = 3.0
    """PointRend's k >= 1: draw k P uniform candidates before keeping the uncertain ones."""
    importance_ratio: float = 0.75
    """PointRend's beta in [0, 1]: the share of points taken from the most uncertain."""
    render_points: int = 8192
    """N, the most cells re-predicted per inference step (paper: 8192; see ``render_share``
    and ``render_margin``). On one grid, the steps render the N next cells of one ranking:
    at most ``render_steps`` x N cells in all, never one twice."""
    render_steps: int = 2
    """Inference steps (paper: 2). Without ``render_upsample`` two steps of N points render
    exactly what one step of 2N does: rendered cells are left out of the next ranking and the
    others keep their logits, so rendered values never re-rank cells on the same grid."""
    render_margin: float | None = 3.0
    """Adaptive budget: a cell whose coarse top-2 logit margin (largest minus second largest)
    is at least this is certain, keeps its coarse value and is not rendered; each step renders
    only uncertain cells, up to N. None: the paper's fixed budget (N cells per step, however
    certain). The default 3.0 comes from rendering every cell of the demo validation slices
    with four trained demo models: the cells at a margin >= 3 that flipped label were 0.04%,
    0%, 0% and 0.04% of all cells (>= 2.5: 0.41%, 0.004%, 0.008%, 0.27%; >= 3.5: none),
    while 54-63% of the cells with a margin below 0.25 flipped (``python -m morse.bench
    margins``). Over three demo seeds on validation it scored as the fixed budget (Dice 0.5030
    ± 0.011 against 0.5026 ± 0.012, HD95 32.76 mm both; docs/results.md)."""
    render_share: float | None = 0.125
    """The most cells one step may render, as a share of its grid: N per step is
    min(``render_points``, share x cells), at least 1. 0.125 keeps the paper's 8192 on
    256x256 slices and scales N down on smaller grids (an 84x206 slice gets 2163 per step,
    where a fixed 8192 x 2 re-predicted 95% of it). None: N whatever the grid's size."""
    render_upsample: bool = False
    """Double the grid at each inference step (PointRend); the rendered values are then
    interpolated onto the finer grid and do take part in the next step's ranking."""
    render_chunk: int | None = None
    """Run the head on at most this many points at a time (bounds memory); None: all."""
    render_precision: str = "auto"
    """fp32 | bf16 | auto: the point MLPs (experts, gate, head) in training and at inference;
    auto: bf16 where the device computes it natively (CUDA from Ampere on, CPUs with
    AVX512-BF16 or AMX), fp32 elsewhere.

    Coordinates, sampling, the gate weights, the point logits and the rendered maps stay
    fp32. On a CPU with bf16 instructions the renderer ran 2.5x faster at inference and 2.2x
    in training; see docs/results.md for its accuracy next to fp32 over seeds. fp32 makes
    results identical across machines."""
    expert_width: int = 256
    """Width of each expert's two layers and of the fused feature (paper: 256)."""
    head_width: int = 256
    """Width of the implicit head's hidden layers (paper: 256)."""
    head_layers: int = 3
    """Hidden layers of the implicit head (paper: 3)."""
    num_frequencies: int = 128
    """F, Fourier frequencies; the encoding has 2F channels (paper: 128 -> 256)."""
    fourier_scale: float = 1.0
    """Standard deviation of the Fourier matrix; larger resolves finer detail."""
    dropout: float = 0.1
    """Dropout after the fusion MLP (paper: 0.1)."""

    def __post_init__(self) -> None:
        rules = [
            ("oversample_ratio", self.oversample_ratio >= 1, ">= 1"),
            ("importance_ratio", 0 <= self.importance_ratio <= 1, "in [0, 1]"),
            ("render_points", self.render_points >= 1, ">= 1"),
            ("render_steps", self.render_steps >= 0, ">= 0"),
            ("render_margin", self.render_margin is None or self.render_margin > 0,
             "> 0 or None"),
            ("render_share", self.render_share is None or 0 < self.render_share <= 1,
             "in (0, 1] or None"),
            ("render_chunk", self.render_chunk is None or self.render_chunk >= 1, ">= 1 or None"),
            ("render_precision", self.render_precision in RENDER_PRECISIONS,
             f"one of {', '.join(RENDER_PRECISIONS)}"),
            ("train_points", self.train_points is None or self.train_points >= 1, ">= 1 or None"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ValueError(
                    f"{name} must be {rule}, got {getattr(self, name)!r}"
                )


def renderer_config(config: RendererConfig | None = None, **options: Any) -> RendererConfig:
    """``config`` (default: the paper's settings) with ``options`` replacing its fields.

    >>> renderer_config(render_points=4096).render_points
    4096
    >>> renderer_config(render_point=1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: unknown renderer option 'render_point'; did you mean 'render_points'? ...
    """
    names = [field.name for field in dataclasses.fields(RendererConfig)]
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
