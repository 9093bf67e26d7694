"""A render budget calibrated per trained model: the smallest margin that keeps the fixed
budget's label changes.

A cell *flips* when the paper's fixed budget (``render_margin`` None, N cells per step) gives
it another label than the coarse prediction. Only flipped cells make the renderer's output
differ from the backbone's, so a budget that renders every flipped cell the fixed budget
renders gives the fixed budget's labels; the others are certain enough to keep theirs.

:func:`calibrate` predicts validation volumes twice:

1. with the fixed budget, recording each cell's coarse top-2 logit margin (the renderer's own
   ranking), its rank in its image (share of the image's cells ranked more uncertain: 2D per
   slice, 3D per volume, where the windows rank their own cells) and whether it flipped;
2. with the smallest ``render_margin`` t that holds ``keep`` (99.5%) of the flipped cells
   below it (rounded up to 3 significant digits), checking how many flipped cells get the
   fixed budget's label back (``kept``, measured, not assumed: 3D windows blend logits).

Cells at margin >= t are certain and skip the renderer; the caps stay those of the fixed
budget, so the calibrated budget renders a subset of the fixed budget's cells (a prefix of
its ranking), by one comparison per cell. A share of the grid, the other possible form,
would render as many cells on a blank slice as on a busy one; the rank distribution is
recorded to show how much of the ranking the flips use.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from morse.io import atomic_write_text
from morse.io.checkpoint import update_checkpoint
from morse.model.module import Morse
from morse.model.settings import InferenceConfig
from morse.model.volumes import predict_volume

__all__ = ["CALIBRATION_NAME", "EDGES", "KEEP", "Calibration", "Inputs", "calibrate",
           "calibrate_files", "calibration_line", "flip_table", "margin_counts", "pick_margin",
           "rank_shares", "store_calibration", "uncalibrated_line"]

CALIBRATION_NAME = "calibration.json"
"""The run folder's record of what was measured, per checkpoint file."""

KEEP = 0.995
"""The share of the fixed budget's flipped cells the calibrated budget must keep."""

EDGES = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 6.0, 8.0, math.inf)
"""Bin edges of the coarse margin (logits) in the flip table."""

QUANTILES = (0.5, 0.9, 0.99, 0.995)
"""Quantiles of the flipped cells' margins and ranks that are recorded."""

Inputs = Callable[[], Iterable[tuple[np.ndarray, Sequence[int] | None]]]
"""Yields each validation volume's network input (C, *S) and the output grid to render on
(None: its own); called once per pass."""


@dataclass
class Calibration:
    """What :func:`calibrate` measured on ``cases`` volumes (``cells`` output cells).

    ``render_margin`` is None when no cell flipped: there is nothing to keep, and the run
    keeps its default. ``bins``: cells and flips per coarse-margin bin of :data:`EDGES`
    (``high`` None for the last). Shares are of all cells.
    """

    render_margin: float | None
    keep: float
    kept: float | None
    flips: int
    cells: int
    cases: int
    rendered_share: float | None
    fixed_rendered_share: float
    flip_margins: dict[str, float] = field(default_factory=dict)
    flip_ranks: dict[str, float] = field(default_factory=dict)
    bins: list[dict] = field(default_factory=list)

    def record(self) -> dict:
        """Plain data for a checkpoint and calibration.json."""
        return dataclasses.asdict(self)


@dataclass
class _Tally:
    """Pass 1, summed over volumes."""

    cells: int = 0
    rendered: int = 0
    margins: list[np.ndarray] = field(default_factory=list)
    ranks: list[np.ndarray] = field(default_factory=list)
    flipped: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    bin_cells: np.ndarray = field(default_factory=lambda: np.zeros(len(EDGES) - 1, np.int64))


def rank_shares(margin: np.ndarray, per_slice: bool) -> np.ndarray:
    """(*S) margins -> (*S) share of the image's cells with a smaller margin (ties by
    position), per slice along the last axis (2D) or over the volume (3D).

    >>> rank_shares(np.array([[3.0, 0.0], [1.0, 2.0]]), per_slice=True).tolist()
    [[0.5, 0.0], [0.0, 0.5]]
    """
    flat = margin.reshape(-1, margin.shape[-1]) if per_slice else margin.reshape(-1, 1)
    ranks = np.empty(flat.shape, np.float32)
    order = np.argsort(flat, axis=0, kind="stable")
    np.put_along_axis(ranks, order, np.arange(flat.shape[0], dtype=np.float32)[:, None], 0)
    return (ranks / flat.shape[0]).reshape(margin.shape)


def margin_counts(margins: np.ndarray) -> np.ndarray:
    """(len(EDGES) - 1,) int64: how many of ``margins`` fall in each bin of :data:`EDGES`."""
    return np.histogram(margins, EDGES)[0]


def flip_table(cells: np.ndarray, flips: np.ndarray) -> list[dict]:
    """Cells and flips per bin of :data:`EDGES` (``margin_counts`` of every cell and of the
    flipped ones); ``high`` None for the last bin.

    >>> flip_table(margin_counts(np.array([0.1, 0.2, 5.0])), margin_counts(np.array([0.1])))[0]
    {'low': 0.0, 'high': 0.25, 'cells': 2, 'flips': 1}
    """
    return [{"low": lo, "high": None if math.isinf(hi) else hi, "cells": int(c), "flips": int(f)}
            for lo, hi, c, f in zip(EDGES[:-1], EDGES[1:], cells, flips)]


def pick_margin(flip_margins: np.ndarray, keep: float = KEEP) -> float | None:
    """The smallest margin, rounded up to 3 significant digits, with ``keep`` of the flipped
    cells' margins strictly below it; None without flips.

    >>> pick_margin(np.array([0.5, 1.0, 2.0, 2.4]), keep=0.75)
    2.01
    """
    if flip_margins.size == 0:
        return None
    ordered = np.sort(flip_margins.astype(np.float64))
    needed = ordered[max(math.ceil(keep * ordered.size), 1) - 1]
    above = float(np.nextafter(needed, math.inf))
    digits = 2 - math.floor(math.log10(above)) if above > 0 else 0
    return max(math.ceil(above * 10**digits) / 10**digits, 1e-3)


def _with_margin(model: Morse, margin: float | None) -> None:
    renderer = model.renderer
    renderer.config = dataclasses.replace(renderer.config, render_margin=margin)


def _fixed_pass(model: Morse, inputs: Inputs, settings: InferenceConfig) -> tuple[_Tally, int]:
    """Pass 1: the fixed budget's flips, their margins and ranks, and their labels."""
    tally, cases = _Tally(), 0
    _with_margin(model, None)
    for image, shape in inputs():
        cases += 1
        out = predict_volume(model, image, settings, output_shape=shape, margin=True)
        flipped = out.rendered != out.coarse
        margin = out.margin
        index = np.flatnonzero(flipped)
        tally.cells += margin.size
        tally.rendered += int(out.rendered_points.sum())
        tally.margins.append(margin[flipped])
        tally.ranks.append(rank_shares(margin, model.spatial_dims == 2)[flipped])
        tally.flipped.append((index, out.rendered.ravel()[index]))
        tally.bin_cells += margin_counts(margin)
    return tally, cases


def _check_pass(model: Morse, inputs: Inputs, settings: InferenceConfig, margin: float,
                flipped: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, int]:
    """Pass 2 with ``margin``: flipped cells given the fixed budget's label, cells rendered."""
    kept = rendered = 0
    _with_margin(model, margin)
    for (image, shape), (index, labels) in zip(inputs(), flipped):
        out = predict_volume(model, image, settings, output_shape=shape)
        kept += int((out.rendered.ravel()[index] == labels).sum())
        rendered += int(out.rendered_points.sum())
    return kept, rendered


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {f"{100 * q:g}%": float(np.quantile(values, q)) for q in QUANTILES}


def calibrate(model: Morse, inputs: Inputs, settings: InferenceConfig,
              keep: float = KEEP) -> Calibration:
    """Measure the flips of ``model``'s fixed budget on ``inputs`` and pick the smallest
    ``render_margin`` keeping ``keep`` of them (see the module's text). The renderer's other
    settings (caps, steps, precision) are the model's; its config is restored afterwards."""
    if model.renderer is None:
        raise ValueError("calibrate needs a model with its renderer (model.renderer=true)")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    original = model.renderer.config
    try:
        tally, cases = _fixed_pass(model, inputs, settings)
        flips = np.concatenate(tally.margins) if tally.margins else np.zeros(0, np.float32)
        margin = pick_margin(flips, keep)
        kept = rendered = None
        if margin is not None:
            kept, rendered = _check_pass(model, inputs, settings, margin, tally.flipped)
    finally:
        model.renderer.config = original
    cells = max(tally.cells, 1)
    ranks = np.concatenate(tally.ranks) if tally.ranks else np.zeros(0, np.float32)
    bins = flip_table(tally.bin_cells, margin_counts(flips))
    return Calibration(
        render_margin=margin, keep=keep, kept=None if kept is None else kept / flips.size,
        flips=int(flips.size), cells=tally.cells, cases=cases,
        rendered_share=None if rendered is None else rendered / cells,
        fixed_rendered_share=tally.rendered / cells, flip_margins=_quantiles(flips),
        flip_ranks=_quantiles(ranks), bins=bins)


def store_calibration(run_dir: str | os.PathLike, records: Mapping[str, dict]) -> Path:
    """Add each record to its checkpoint (``{"last.pt": record, ...}``, files of ``run_dir``)
    and to ``run_dir/calibration.json`` (other files' entries kept); atomically, file by
    file."""
    run_dir = Path(run_dir)
    for name, record in records.items():
        update_checkpoint(run_dir / name, calibration=record)
    path = run_dir / CALIBRATION_NAME
    try:
        kept = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:  # unreadable: replaced by what was just measured
        kept = {}
    kept = kept if isinstance(kept, dict) else {}
    return atomic_write_text(path, json.dumps({**kept, **records}, indent=2) + "\n")


def calibration_line(name: str, record: Mapping) -> str:
    """One line for people about a stored calibration."""
    return (f"calibrated {name} (step {record.get('step', '?')}) on {record['cases']} validation "
            f"case(s): render_margin {record['render_margin']:g} keeps "
            f"{100 * record['kept']:.2f}% of the {record['flips']} cells the fixed budget flips "
            f"and renders {100 * record['rendered_share']:.2f}% of cells (fixed budget: "
            f"{100 * record['fixed_rendered_share']:.2f}%)")


def uncalibrated_line(reason: str, run_margin: float | None) -> str:
    """One line: why the budget stays the run's default, and what that default is."""
    default = "null (the fixed budget)" if run_margin is None else f"{run_margin:g}"
    return (f"{reason}: the render budget is not calibrated; predictions keep the run's "
            f"model.render_margin={default}")


ModelOf = Callable[[], Morse]
"""Gives the model of one checkpoint file (its weights loaded), when it is measured."""


def calibrate_files(
    run_dir: str | os.PathLike,
    files: Mapping[str, tuple[int, ModelOf]],
    inputs: Inputs,
    settings: InferenceConfig,
    run_margin: float | None,
    say: Callable[[str], object] = print,
    keep: float = KEEP,
) -> dict[str, dict]:
    """Calibrate the checkpoint files of a run (``{name: (step, model)}``), once per step
    (best.pt and last.pt of the final step share their weights), store the records
    (:func:`store_calibration`) and ``say`` one line per file, or one line on why nothing
    was calibrated (no validation case, no flip: the run's ``run_margin`` stays)."""
    measured: dict[int, Calibration] = {}
    records = {}
    for name, (step, model_of) in files.items():
        if step not in measured:
            measured[step] = calibrate(model_of(), inputs, settings, keep)
        result = measured[step]
        if result.cases == 0:
            say(uncalibrated_line("no validation cases", run_margin))
            return {}
        if result.render_margin is None:
            say(uncalibrated_line(f"no cell flipped under the fixed budget on the {result.cases} "
                                  "validation case(s)", run_margin))
            return {}
        records[name] = {**result.record(), "step": step}
    store_calibration(run_dir, records)
    for name, record in records.items():
        say(calibration_line(name, record))
    return records
