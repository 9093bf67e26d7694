"""A render budget calibrated per trained model: the smallest margin below which the renderer's
label changes lie.

A cell *flips* when rendering gives it another label than the coarse prediction. Only flipped
cells make the renderer's output differ from the backbone's, so a margin below which (nearly)
every flip lies renders what changes labels and skips the cells certain enough to keep theirs.

:func:`calibrate` predicts validation volumes three times:

1. the *reference*: every cell whose coarse top-2 logit margin is below
   :data:`REFERENCE_MARGIN` rendered, with no cap on the cells per step. It records each
   cell's margin, its rank in its image (share of the image's cells ranked more uncertain: 2D
   per slice, 3D per volume) and whether it flipped. Without the caps, the flips show where
   the renderer changes labels at any margin; under the fixed budget's cap they stop where
   the cap does (on the 3D demo's thin validation slab the cap held only cells of margin
   below 0.1-0.8 while flips went on to 3), and a margin picked there cut rendering on test
   windows that the cap did not fill;
2. the paper's fixed budget (``render_margin`` None, N cells per step): its flips and labels;
3. the smallest ``render_margin`` t holding ``keep`` (99.5%) of the reference's flips below it
   (rounded up to 3 significant digits), with the run's caps: the share of the fixed budget's
   flipped cells that get the fixed budget's label (``kept``, measured, not assumed: the caps
   and 3D windows' blending differ) and the cells rendered.

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

__all__ = ["CALIBRATION_NAME", "EDGES", "KEEP", "REFERENCE_MARGIN", "Calibration", "Inputs",
           "calibrate", "calibrate_files", "calibration_line", "flip_table", "margin_counts",
           "pick_margin", "rank_shares", "store_calibration", "uncalibrated_line"]

CALIBRATION_NAME = "calibration.json"
"""The run folder's record of what was measured, per checkpoint file."""

KEEP = 0.995
"""The share of the reference's flipped cells that must lie below the calibrated margin."""

REFERENCE_MARGIN = 8.0
"""The reference renders every cell below this margin (on the demo runs no cell flipped above
4)."""

REFERENCE_CHUNK = 65536
"""Points the reference renders at a time when the run sets no ``render_chunk`` (it renders
many more cells than a budget does)."""

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
    keeps its default. ``flips``: cells the reference flips; ``fixed_flips``: cells the fixed
    budget flips, of which the calibrated budget gives ``kept`` the fixed label. ``bins``:
    cells, reference flips and fixed-budget flips per coarse-margin bin of :data:`EDGES`
    (``high`` None for the last). Shares are of all cells.
    """

    render_margin: float | None
    keep: float
    kept: float | None
    flips: int
    fixed_flips: int
    cells: int
    cases: int
    rendered_share: float | None
    fixed_rendered_share: float
    reference_margin: float = REFERENCE_MARGIN
    flip_margins: dict[str, float] = field(default_factory=dict)
    flip_ranks: dict[str, float] = field(default_factory=dict)
    bins: list[dict] = field(default_factory=list)

    def record(self) -> dict:
        """Plain data for a checkpoint and calibration.json."""
        return dataclasses.asdict(self)


@dataclass
class _Tally:
    """The reference pass, summed over volumes."""

    cells: int = 0
    margins: list[np.ndarray] = field(default_factory=list)
    ranks: list[np.ndarray] = field(default_factory=list)
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


def flip_table(cells: np.ndarray, flips: np.ndarray,
               fixed_flips: np.ndarray | None = None) -> list[dict]:
    """Cells, flips and (given) fixed-budget flips per bin of :data:`EDGES` (``margin_counts``
    of every cell and of the flipped ones); ``high`` None for the last bin.

    >>> one = margin_counts(np.array([0.1]))
    >>> flip_table(margin_counts(np.array([0.1, 0.2, 5.0])), one, one)[0]
    {'low': 0.0, 'high': 0.25, 'cells': 2, 'flips': 1, 'fixed_flips': 1}
    """
    rows = [{"low": lo, "high": None if math.isinf(hi) else hi, "cells": int(c), "flips": int(f)}
            for lo, hi, c, f in zip(EDGES[:-1], EDGES[1:], cells, flips)]
    if fixed_flips is not None:
        for row, count in zip(rows, fixed_flips):
            row["fixed_flips"] = int(count)
    return rows


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


def _with_budget(model: Morse, **fields) -> None:
    renderer = model.renderer
    renderer.config = dataclasses.replace(renderer.config, **fields)


def _reference_pass(model: Morse, inputs: Inputs, settings: InferenceConfig
                    ) -> tuple[_Tally, int]:
    """Pass 1: every cell below ``REFERENCE_MARGIN`` rendered, no cap: the flipped cells'
    margins and ranks."""
    tally, cases = _Tally(), 0
    _with_budget(model, render_margin=REFERENCE_MARGIN, render_points=2**40, render_share=None,
                 render_chunk=model.renderer.config.render_chunk or REFERENCE_CHUNK)
    for image, shape in inputs():
        cases += 1
        out = predict_volume(model, image, settings, output_shape=shape, margin=True)
        flipped = out.rendered != out.coarse
        margin = out.margin
        tally.cells += margin.size
        tally.margins.append(margin[flipped])
        tally.ranks.append(rank_shares(margin, model.spatial_dims == 2)[flipped])
        tally.bin_cells += margin_counts(margin)
    return tally, cases


def _fixed_pass(model: Morse, inputs: Inputs, settings: InferenceConfig
                ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, int]:
    """Pass 2, the fixed budget: per volume its flipped cells (flat indices) and their
    labels; the flipped cells' margins; the cells rendered."""
    flipped_cells, margins, rendered = [], [], 0
    _with_budget(model, render_margin=None)
    for image, shape in inputs():
        out = predict_volume(model, image, settings, output_shape=shape, margin=True)
        index = np.flatnonzero(out.rendered != out.coarse)
        flipped_cells.append((index, out.rendered.ravel()[index]))
        margins.append(out.margin.ravel()[index])
        rendered += int(out.rendered_points.sum())
    return flipped_cells, _joined(margins), rendered


def _check_pass(model: Morse, inputs: Inputs, settings: InferenceConfig, margin: float,
                flipped: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, int]:
    """Pass 3 with ``margin``: the fixed budget's flipped cells given its label, cells
    rendered."""
    kept = rendered = 0
    _with_budget(model, render_margin=margin)
    for (image, shape), (index, labels) in zip(inputs(), flipped):
        out = predict_volume(model, image, settings, output_shape=shape)
        kept += int((out.rendered.ravel()[index] == labels).sum())
        rendered += int(out.rendered_points.sum())
    return kept, rendered


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {f"{100 * q:g}%": float(np.quantile(values, q)) for q in QUANTILES}


def calibrate(model: Morse, inputs: Inputs, settings: InferenceConfig,
              keep: float = KEEP) -> Calibration:
    """Measure where ``model``'s renderer flips labels on ``inputs`` and pick the smallest
    ``render_margin`` keeping ``keep`` of those flips below it (see the module's text). The
    renderer's other settings (caps, steps, precision) are the model's; its config is
    restored afterwards."""
    if model.renderer is None:
        raise ValueError("calibrate needs a model with its renderer (model.renderer=true)")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    original = model.renderer.config
    try:
        tally, cases = _reference_pass(model, inputs, settings)
        model.renderer.config = original
        fixed_cells, fixed_margins, fixed_rendered = _fixed_pass(model, inputs, settings)
        flips = _joined(tally.margins)
        margin = pick_margin(flips, keep)
        kept = rendered = None
        if margin is not None:
            kept, rendered = _check_pass(model, inputs, settings, margin, fixed_cells)
    finally:
        model.renderer.config = original
    cells = max(tally.cells, 1)
    fixed_flips = int(fixed_margins.size)
    return Calibration(
        render_margin=margin, keep=keep,
        kept=None if kept is None else kept / max(fixed_flips, 1),
        flips=int(flips.size), fixed_flips=fixed_flips, cells=tally.cells, cases=cases,
        rendered_share=None if rendered is None else rendered / cells,
        fixed_rendered_share=fixed_rendered / cells, flip_margins=_quantiles(flips),
        flip_ranks=_quantiles(_joined(tally.ranks)),
        bins=flip_table(tally.bin_cells, margin_counts(flips), margin_counts(fixed_margins)))


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
            f"case(s): render_margin {record['render_margin']:g} holds "
            f"{100 * record['keep']:g}% of the {record['flips']} label changes of rendering "
            f"every cell; it gives {100 * record['kept']:.2f}% of the "
            f"{record.get('fixed_flips', record['flips'])} cells the fixed budget changes its "
            f"label and renders {100 * record['rendered_share']:.2f}% of cells (fixed budget: "
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
            say(uncalibrated_line(f"no cell changed label when rendered on the {result.cases} "
                                  "validation case(s)", run_margin))
            return {}
        records[name] = {**result.record(), "step": step}
    store_calibration(run_dir, records)
    for name, record in records.items():
        say(calibration_line(name, record))
    return records
