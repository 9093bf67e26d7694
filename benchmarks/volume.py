"""What a user waits for: predicting the demo's whole test volume, plain against MORSE with
the paper's fixed budget and with the adaptive default (``predict_volume``, interleaved).

With a trained run (``source``) its model and data are used; without, the demo preset's data
and a model with untrained weights (every cell is then uncertain, so the adaptive budget
renders its cap). Skipped, with a note, when the data is absent.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from morse.config import RendererConfig, load_config
from morse.data.formats import data_format
from morse.data.geometry import to_network
from morse.data.prepare import load_eval_volumes
from morse.errors import DataError
from morse.inference.trained import load_run, predict_case
from morse.model import Morse
from morse.model.build import build_model
from morse.renderer.module import MorseRenderer

__all__ = ["run_volume", "format_volume"]

VARIANTS = {"plain": None, "fixed": {"render_margin": None}, "adaptive": {}}
"""Renderer off; the paper's fixed budget; the default (adaptive) budget."""


def _load(source: str | None, device: str):
    """The model (eval), its config and the first test volume; DataError when data is absent."""
    if source is not None:
        run = load_run(source, device)
        model, cfg, preprocessing = run.model, run.config, run.preprocessing
        volumes = load_eval_volumes(cfg.data, "test", preprocessing)
        if run.geometry is not None:  # the network's own grid, as the overhead rows time it
            volumes = [to_network(v, run.geometry) for v in volumes]
    else:
        cfg = load_config("demo")
        volumes = load_eval_volumes(cfg.data, "test")
        classes = data_format(cfg.data).class_names(cfg.data)
        torch.manual_seed(0)
        model = build_model(cfg, volumes[0].num_channels, len(classes)).to(device).eval()
    if not volumes:
        raise DataError(f"{cfg.data.root}: no test volume")
    return model, cfg, volumes[0]


def _variant(model: Morse, renderer: MorseRenderer, base: RendererConfig,
             options: dict | None) -> None:
    """Put the model in one variant: no renderer, or the renderer with ``base`` + options."""
    model.renderer = None if options is None else renderer
    renderer.config = dataclasses.replace(base, **(options or {}))


def _timed_prediction(model: Morse, cfg, volume, device: str) -> tuple[float, object]:
    start = time.perf_counter()
    prediction = predict_case(model, cfg, volume, device)
    return time.perf_counter() - start, prediction


def run_volume(source: str | None = None, device: str = "cpu", repeats: int = 3) -> dict:
    """Median seconds per variant (interleaved), ratios to plain, voxels rendered by each."""
    try:
        model, cfg, volume = _load(source, device)
    except (DataError, OSError) as error:
        return {"note": f"skipped (no demo data): {error}"}
    renderer, base = model.renderer, model.renderer.config
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    row: dict = {"volume": volume.case_id, "shape": list(volume.image.shape[1:]),
                 "weights": "trained" if source else "untrained"}
    for repeat in range(repeats + 1):  # the first round warms up
        for name, options in VARIANTS.items():
            _variant(model, renderer, base, options)
            seconds, prediction = _timed_prediction(model, cfg, volume, device)
            if repeat:
                times[name].append(seconds)
            row[f"voxels_{name}"] = int(prediction.rendered_points.sum())
    _variant(model, renderer, base, {})
    for name, values in times.items():
        row[f"seconds_{name}"] = statistics.median(values)
        if name != "plain":
            row[f"ratio_{name}"] = statistics.median(
                [a / b for a, b in zip(values, times["plain"])])
    return row


def format_volume(row: dict) -> str:
    """One block: seconds, ratio to plain and voxels rendered per variant."""
    if "note" in row:
        return f"whole-volume prediction: {row['note']}"
    lines = [f"whole-volume prediction, {row['volume']} {row['shape']} ({row['weights']} "
             "weights), medians", f"  {'variant':<12}{'seconds':>10}{'ratio':>8}{'voxels':>10}"]
    for name in VARIANTS:
        ratio = f"{row[f'ratio_{name}']:>8.2f}" if name != "plain" else f"{'':>8}"
        lines.append(f"  {name:<12}{row[f'seconds_{name}']:>10.2f}{ratio}"
                     f"{row[f'voxels_{name}']:>10}")
    return "\n".join(lines)
