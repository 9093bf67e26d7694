"""Inference knobs of one trained run: rendered accuracy and prediction time against the render
budget (points per step, steps, adaptive or fixed budget, share cap).

    python -m benchmarks knobs runs/demo --subsets val test

For each setting of the grid (``render_points`` x ``render_steps`` x ``render_margin`` x
``render_share``, see :class:`morse.config.RendererConfig`) the loaded model's renderer
takes those options and :func:`morse.evaluation.evaluate.evaluate`, the code behind ``morse
evaluate``, scores the subset (its ``metrics.json`` lands in ``OUT/<subset>/<setting>/``).
Prediction time is the median over repeats of one pass of
:func:`morse.inference.trained.predict_case` (the function ``evaluate`` predicts with) over the
subset's volumes, without the gate maps ``evaluate`` draws its figures with; the same pass
counts the voxels the renderer re-predicted. The backbone alone (zero render steps) is timed
as the baseline. ``OUT`` (default ``RUN/knobs``) gets ``knobs.json``, ``knobs.md`` and
``knobs.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from morse.data.prepare import load_eval_volumes
from morse.data.volume import Volume
from morse.evaluation.evaluate import distance_unit, evaluate
from morse.evaluation.tables import FOREGROUND, metric_header
from morse.inference.trained import TrainedRun, load_run, predict_case
from morse.io import atomic_write_text

__all__ = [
    "Knob",
    "format_knobs",
    "knob_grid",
    "main",
    "measure_knobs",
    "parse_optional_float",
    "plot_knobs",
    "set_knob",
    "time_prediction",
]

#: The grid of the evidence issue: points per step, steps and the two budgets.
DEFAULT_POINTS = (96, 192, 384, 768, 1536)
DEFAULT_STEPS = (1, 2, 3)
DEFAULT_MARGINS: tuple[float | None, ...] = (3.0, None)


@dataclass(frozen=True)
class Knob:
    """One inference setting of the renderer.

    Attributes:
        points: ``render_points``, the most cells re-predicted per step (N).
        steps: ``render_steps``; 0 renders nothing (the backbone's output alone).
        margin: ``render_margin``, the adaptive budget's certainty margin; None: the paper's
            fixed budget (N cells per step however certain).
        share: ``render_share``, the cap on N as a share of each grid; None: no cap.
    """

    points: int
    steps: int
    margin: float | None
    share: float | None

    @property
    def name(self) -> str:
        """Folder name of the setting.

        >>> Knob(384, 2, 3.0, 0.125).name, Knob(384, 2, None, None).name
        ('p384-s2-m3-share0.125', 'p384-s2-fixed-sharenone')
        """
        margin = "fixed" if self.margin is None else f"m{self.margin:g}"
        share = "none" if self.share is None else f"{self.share:g}"
        return f"p{self.points}-s{self.steps}-{margin}-share{share}"

    @property
    def budget(self) -> str:
        """``"adaptive (margin 3)"`` or ``"fixed"``."""
        return "fixed" if self.margin is None else f"adaptive (margin {self.margin:g})"

    def options(self) -> dict:
        """The ``RendererConfig`` fields this setting sets."""
        return {"render_points": self.points, "render_steps": self.steps,
                "render_margin": self.margin, "render_share": self.share}


def knob_grid(
    points: Sequence[int],
    steps: Sequence[int],
    margins: Sequence[float | None],
    shares: Sequence[float | None],
) -> list[Knob]:
    """Every combination, grouped by margin, share and steps, points innermost.

    >>> [k.name for k in knob_grid([96, 192], [1], [3.0], [None])]
    ['p96-s1-m3-sharenone', 'p192-s1-m3-sharenone']
    """
    return [Knob(p, s, m, sh) for m in margins for sh in shares for s in steps for p in points]


def set_knob(run: TrainedRun, knob: Knob) -> None:
    """Give the loaded run's renderer the setting (in place; every knob field is set)."""
    renderer = run.model.renderer
    if renderer is None:
        raise ValueError(f"{run.path}: the renderer is off (model.renderer=false); inference "
                         "knobs need a MORSE run")
    renderer.config = dataclasses.replace(renderer.config, **knob.options())


def time_prediction(
    run: TrainedRun, volumes: Sequence[Volume], device: str, repeats: int
) -> tuple[float, int]:
    """Median seconds of one prediction pass over ``volumes`` and the voxels re-predicted.

    Args:
        run: a loaded run, its renderer set as wanted.
        volumes: normalised volumes, images (C, *S).
        device: where the network runs.
        repeats: timed passes (the median is returned).

    Returns:
        ``(seconds, rendered voxels summed over the volumes)``.
    """
    seconds, rendered = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        predictions = [predict_case(run.model, run.config, v, device) for v in volumes]
        seconds.append(time.perf_counter() - start)
        rendered = int(sum(p.rendered_points.sum() for p in predictions))
    return statistics.median(seconds), rendered


def _foreground(summary: dict, metric: str) -> float:
    return float(summary["mean"][FOREGROUND][metric])


def measure_knobs(
    source: str | Path | TrainedRun,
    grid: Sequence[Knob],
    *,
    subsets: Sequence[str] = ("val",),
    output: str | Path | None = None,
    device: str = "cpu",
    repeats: int = 3,
    checkpoint: str | None = None,
    command: str = "",
) -> dict:
    """Score and time every setting of ``grid`` on each subset; write the results.

    Args:
        source: a MORSE run folder or checkpoint (or a run already loaded).
        grid: the settings (see :func:`knob_grid`).
        subsets: among "val" and "test" (choose settings on val; report test once fixed).
        output: results folder; default ``<run folder>/knobs``.
        device: where the network runs.
        repeats: timed prediction passes per setting (median).
        checkpoint: "best" or "last" for a run folder; default the run's ``eval.checkpoint``.
        command: the command line to record in the results.

    Returns:
        The content of ``knobs.json``: the run, checkpoint, threads, repeats, per subset the
        baseline (backbone alone: coarse Dice and HD95, seconds) and one row per setting
        (its options, rendered Dice and HD95, voxels re-predicted and in all, seconds).
    """
    if not grid:
        raise ValueError("measure_knobs needs at least one setting in the grid")
    run = source if isinstance(source, TrainedRun) else load_run(source, device, checkpoint)
    out = Path(output) if output else run.path.parent / "knobs"
    result = {"command": command, "run": str(run.path.parent), "checkpoint": {
        "file": run.path.name, "step": run.step}, "threads": torch.get_num_threads(),
        "repeats": repeats, "subsets": {}}
    for subset in subsets:
        volumes = load_eval_volumes(run.config.data, subset, run.preprocessing)
        set_knob(run, dataclasses.replace(grid[0], steps=0))
        base_seconds, _ = time_prediction(run, volumes, device, repeats)
        rows = []
        for knob in grid:
            set_knob(run, knob)
            summary = evaluate(run, out / subset / knob.name, subset=subset, device=device,
                               verbose=False)
            seconds, rendered = time_prediction(run, volumes, device, repeats)
            rows.append({**dataclasses.asdict(knob),
                         "dice": _foreground(summary["rendered"], "dice"),
                         "hd95": _foreground(summary["rendered"], "hd95"),
                         "rendered_voxels": rendered,
                         "voxels": int(sum(np.prod(v.spatial_shape) for v in volumes)),
                         "seconds": seconds})
            print(f"{subset} {knob.name}: Dice {rows[-1]['dice']:.4f} HD95 "
                  f"{rows[-1]['hd95']:.2f} {seconds:.3f} s", flush=True)
        result["subsets"][subset] = {
            "n_cases": len(volumes), "distance_unit": distance_unit(volumes),
            "baseline": {"dice": _foreground(summary["coarse"], "dice"),
                         "hd95": _foreground(summary["coarse"], "hd95"),
                         "seconds": base_seconds},
            "rows": rows,
        }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "knobs.json", json.dumps(result, indent=2, allow_nan=False))
    atomic_write_text(out / "knobs.md", format_knobs(result))
    plot_knobs(result, out / "knobs.png")
    return result


def _series(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows by (margin, share, steps), in the grid's order, each series ordered by points."""
    series: dict[tuple, list[dict]] = {}
    for row in rows:
        series.setdefault((row["margin"], row["share"], row["steps"]), []).append(row)
    return {key: sorted(value, key=lambda r: r["points"]) for key, value in series.items()}


def _series_label(margin: float | None, share: float | None, steps: int) -> str:
    """``"adaptive (margin 3), share none, 2 steps"``.

    >>> _series_label(None, 0.125, 1)
    'fixed, share 0.125, 1 step'
    """
    budget = Knob(0, steps, margin, share).budget
    plural = "" if steps == 1 else "s"
    return f"{budget}, share {share if share is not None else 'none'}, {steps} step{plural}"


def format_knobs(result: dict) -> str:
    """``knobs.md``: per subset, Dice (HD95) and seconds (% of voxels rendered) against points
    per step, one row per budget, share and number of steps."""
    lines = ["# Inference knobs", ""]
    if result["command"]:
        lines += ["Produced by:", "", f"    {result['command']}", ""]
    point = result["checkpoint"]
    lines += [f"Run {result['run']}, {point['file']} (step {point['step']}); seconds: median "
              f"of {result['repeats']} passes over the subset, {result['threads']} thread(s).",
              ""]
    for subset, block in result["subsets"].items():
        unit, base = block["distance_unit"], block["baseline"]
        hd95 = metric_header("hd95", unit)
        series = _series(block["rows"])
        points = sorted({r["points"] for r in block["rows"]})
        header = "| budget | share | steps | " + " | ".join(f"{p} points" for p in points) + " |"
        rule = "| --- | --- | --- | " + " | ".join("---" for _ in points) + " |"
        lines += [f"## {subset} subset ({block['n_cases']} case(s))", "",
                  f"Backbone alone (no cell rendered): Dice {base['dice']:.4f}, {hd95} "
                  f"{base['hd95']:.2f}, {base['seconds']:.3f} s.", "",
                  f"Rendered Dice ({hd95}):", "", header, rule]
        for (margin, share, steps), rows in series.items():
            cells = {r["points"]: f"{r['dice']:.4f} ({r['hd95']:.2f})" for r in rows}
            lines.append(_pivot_row(margin, share, steps, cells, points))
        lines += ["", "Seconds per pass (share of voxels re-predicted):", "", header, rule]
        for (margin, share, steps), rows in series.items():
            cells = {r["points"]: f"{r['seconds']:.3f} ({_percent(r)})" for r in rows}
            lines.append(_pivot_row(margin, share, steps, cells, points))
        lines.append("")
    return "\n".join(lines)


def _percent(row: dict) -> str:
    """The share of voxels a setting re-predicted, e.g. ``"12.5%"``."""
    return f"{100 * row['rendered_voxels'] / row['voxels']:.1f}%"


def _pivot_row(margin: float | None, share: float | None, steps: int, cells: dict,
               points: list[int]) -> str:
    budget = Knob(0, steps, margin, share).budget
    shown = [cells.get(p, "") for p in points]
    return f"| {budget} | {share if share is not None else 'none'} | {steps} | " \
           + " | ".join(shown) + " |"


def plot_knobs(result: dict, path: Path) -> Path:
    """``knobs.png``: Dice and seconds against points per step (log scale), one column per
    subset, one line per budget, share and number of steps, the backbone alone dotted."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    subsets = list(result["subsets"])
    figure = Figure(figsize=(4.6 * len(subsets), 7.0), layout="constrained")
    axes = figure.subplots(2, len(subsets), squeeze=False)
    styles = {}
    for column, subset in enumerate(subsets):
        block = result["subsets"][subset]
        for key, rows in _series(block["rows"]).items():
            margin, share, steps = key
            style = styles.setdefault((margin, share), ["-", "--", ":", "-."][len(styles) % 4])
            xs = [r["points"] for r in rows]
            for row, metric in enumerate(("dice", "seconds")):
                axes[row, column].plot(xs, [r[metric] for r in rows], style, marker="o",
                                       markersize=3, color=f"C{steps}",
                                       label=_series_label(margin, share, steps))
        points = sorted({r["points"] for r in block["rows"]})
        for row, metric in enumerate(("dice", "seconds")):
            ax = axes[row, column]
            ax.axhline(block["baseline"][metric], color="0.4", linestyle=":", linewidth=1,
                       label="backbone alone")
            ax.set_xscale("log", base=2)
            ax.set_xticks(points, [str(p) for p in points], minor=False)
            ax.minorticks_off()
            ax.set_xlabel("points per step")
            ax.set_ylabel("rendered Dice" if metric == "dice" else "seconds per pass")
            ax.set_title(f"{subset}: {'Dice' if metric == 'dice' else 'prediction time'}",
                         fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=7,
                  frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def parse_optional_float(text: str) -> float | None:
    """A float, or None for ``none``/``null`` (the fixed budget, no share cap).

    >>> parse_optional_float("3"), parse_optional_float("none")
    (3.0, None)
    """
    return None if text.lower() in ("none", "null") else float(text)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks knobs RUN [options]``; prints ``knobs.md``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks knobs",
        description="Rendered Dice, HD95 and prediction time of one trained MORSE run against "
                    "points per step, steps and the budget (adaptive or fixed).")
    parser.add_argument("run", help="run folder or checkpoint (renderer on)")
    parser.add_argument("--subsets", nargs="+", default=["val"], choices=["val", "test"])
    parser.add_argument("--points", nargs="+", type=int, default=list(DEFAULT_POINTS))
    parser.add_argument("--steps", nargs="+", type=int, default=list(DEFAULT_STEPS))
    parser.add_argument("--margins", nargs="+", type=parse_optional_float,
                        default=list(DEFAULT_MARGINS),
                        help="render_margin values; none: the paper's fixed budget")
    parser.add_argument("--shares", nargs="+", type=parse_optional_float,
                        help="render_share values; none: no cap (default: the run's own)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (median)")
    parser.add_argument("--checkpoint", choices=["best", "last"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("-o", "--output", help="results folder (default RUN/knobs)")
    args = parser.parse_args(argv)
    run = load_run(args.run, args.device, args.checkpoint)
    if run.model.renderer is None:
        parser.error(f"{args.run}: the renderer is off (model.renderer=false); inference knobs "
                     "need a MORSE run")
    shares = args.shares or [run.model.renderer.config.render_share]
    grid = knob_grid(args.points, args.steps, args.margins, shares)
    command = shlex.join(["python", "-m", "benchmarks", "knobs",
                          *(sys.argv[1:] if argv is None else argv)])
    result = measure_knobs(run, grid, subsets=args.subsets, output=args.output,
                           device=args.device, repeats=args.repeats, command=command)
    print(format_knobs(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
