"""How the render budget should be chosen: the renderer's label flips against the coarse margin,
and the accuracy of the adaptive budget against the paper's fixed one, on trained runs.

Always on the validation subset (the test subset is for the final scores only).

* ``flip_curve``: render *every* cell of each validation volume and bin the cells by their
  coarse top-2 logit margin (on the output grid): how many cells, how many changed label. A
  margin beyond which (almost) nothing flips is a safe ``render_margin``. ``morse calibrate``
  (:mod:`morse.model.calibration`) picks one per run from such flips (every cell below margin
  8 rendered).
* ``budget_accuracy``: rendered Dice and HD95 (foreground means), the share of voxels
  rendered and the prediction time, for each ``render_margin`` asked (None: fixed budget).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from morse.data.prepare import load_eval_volumes
from morse.evaluation.evaluate import metric_spacing
from morse.evaluation.tables import summarise
from morse.inference.trained import TrainedRun, load_run, predict_case
from morse.metrics import case_metrics
from morse.model.calibration import EDGES, flip_table, margin_counts

__all__ = ["EDGES", "flip_curve", "budget_accuracy", "over_runs", "format_margins"]



def _with_renderer(run: TrainedRun, **options) -> None:
    """Replace renderer options of a loaded run in place."""
    renderer = run.model.renderer
    renderer.config = dataclasses.replace(renderer.config, **options)


def flip_curve(source: str, device: str = "cpu") -> dict:
    """Cells and label flips per coarse-margin bin, every validation cell rendered.

    The coarse margin comes from the coarse logits resized to the output grid (zero render
    steps): with softmax probabilities p, ``log p1 - log p2`` is exactly the logit margin.
    """
    run = load_run(source, device)
    volumes = load_eval_volumes(run.config.data, "val", run.preprocessing)
    margins, flips = [], []
    for volume in volumes:
        _with_renderer(run, render_steps=0)
        coarse = predict_case(run.model, run.config, volume, device, run.geometry,
                              probabilities=True)
        _with_renderer(run, render_steps=1, render_points=2**62, render_margin=None,
                       render_share=None)
        every = predict_case(run.model, run.config, volume, device, run.geometry)
        top2 = np.log(np.sort(coarse.probabilities, axis=0)[-2:].astype(np.float64))
        margins.append((top2[1] - top2[0]).ravel())
        flips.append((every.rendered != coarse.rendered).ravel())
    margin, flip = np.concatenate(margins), np.concatenate(flips)
    bins = flip_table(margin_counts(margin), margin_counts(margin[flip]))
    beyond = [{"margin": t, "rendered_share": float((margin < t).mean()),
               "flips_beyond_share": float((flip & (margin >= t)).mean())}
              for t in EDGES[1:-1]]
    return {"run": str(source), "cells": int(margin.size), "flips": int(flip.sum()),
            "bins": bins, "beyond": beyond}


def budget_accuracy(
    source: str, margins: Sequence[float | None] = (None, 3.0, 2.0, 1.0), device: str = "cpu"
) -> dict:
    """Rendered foreground Dice and HD95, share rendered and seconds, per ``render_margin``."""
    run = load_run(source, device)
    volumes = load_eval_volumes(run.config.data, "val", run.preprocessing)
    rows = {}
    for margin in margins:
        _with_renderer(run, render_margin=margin)
        per_case, rendered, seconds = {}, [], 0.0
        for volume in volumes:
            start = time.perf_counter()
            prediction = predict_case(run.model, run.config, volume, device, run.geometry)
            seconds += time.perf_counter() - start
            per_case[volume.case_id] = case_metrics(
                prediction.rendered, volume.label, len(run.class_names), metric_spacing(volume))
            rendered.append(prediction.rendered_points.ravel())
        foreground = summarise(per_case, run.class_names)["mean"]["foreground"]
        rows["fixed" if margin is None else f"margin {margin:g}"] = {
            "dice": foreground["dice"], "hd95": foreground["hd95"],
            "rendered_share": float(np.concatenate(rendered).mean()), "seconds": seconds}
    return {"run": str(source), "variants": rows}


def over_runs(accuracy: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per variant and measure, the mean and standard deviation over runs (seeds).

    >>> rows = [{"variants": {"fixed": {"dice": d, "hd95": 2.0, "rendered_share": 0.5,
    ...          "seconds": 1.0}}} for d in (0.5, 0.7)]
    >>> over_runs(rows)["fixed"]["dice"]
    (0.6, 0.1414)
    """
    names = accuracy[0]["variants"] if accuracy else {}
    return {name: {measure: (round(float(np.mean(values)), 4),
                             round(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, 4))
                   for measure in ("dice", "hd95", "rendered_share", "seconds")
                   for values in [[row["variants"][name][measure] for row in accuracy]]}
            for name in names}


def format_margins(curves: list[dict], accuracy: list[dict]) -> str:
    """The flip curves (one column per run) and the accuracy rows, as text."""
    lines = ["label flips / cells per coarse-margin bin (every validation cell rendered)",
             "  margin       " + "".join(f"{c['run'][-22:]:>24}" for c in curves)]
    for index, (lo, hi) in enumerate(zip(EDGES[:-1], EDGES[1:])):
        row = [c["bins"][index] for c in curves]
        lines.append(f"  [{lo:g}, {hi:g})".ljust(15) + "".join(
            f"{b['flips']:>10}/{b['cells']:<7}{b['flips'] / max(b['cells'], 1):>7.1%}"
            for b in row))
    lines.append("flips at margin >= t as a share of all cells (share of cells below t)")
    for index, t in enumerate(EDGES[1:-1]):
        row = [c["beyond"][index] for c in curves]
        lines.append(f"  t = {t:g}".ljust(15) + "".join(
            f"{b['flips_beyond_share']:>16.3%} ({b['rendered_share']:>4.0%})" for b in row))
    for row in accuracy:
        lines.append(f"{row['run']}: rendered foreground Dice, HD95, share rendered, seconds")
        for name, v in row["variants"].items():
            lines.append(f"  {name:<12}{v['dice']:>8.4f}{v['hd95']:>8.2f}"
                         f"{v['rendered_share']:>8.1%}{v['seconds']:>8.2f}")
    if len(accuracy) > 1:
        lines.append(f"mean ± std over the {len(accuracy)} runs: Dice, HD95, share, seconds")
        for name, v in over_runs(accuracy).items():
            lines.append(f"  {name:<12}" + "".join(
                f"  {v[m][0]:.4g} ± {v[m][1]:.2g}" for m in ("dice", "hd95", "rendered_share",
                                                          "seconds")))
    return "\n".join(lines)
