"""Inference cost on a trained run's own images, where the adaptive budget has certain cells.

The overhead rows time untrained weights on noise: every cell is uncertain there, so the
adaptive budget renders its cap. Here a trained run's model segments a batch of its own test
images, as the network sees them, in turns (plain, MORSE, plain, ...):

* 2D: ``batch`` slices of the first test volume, spread evenly over the slices that hold
  foreground, resized to the run's ``data.slice_size`` (or padded as ``morse predict`` pads);
* 3D: the window of ``data.patch_size`` at the volume's centre (padded where it is smaller).

Variants: ``plain`` (renderer off), ``morse`` (the run's renderer with today's default budget
and precision, whatever the run recorded: adaptive, ``auto``), ``fixed`` (the paper's budget),
``fp32`` (point MLPs in fp32). ``points_*`` is the cells each renders per image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import ResizeWithPadOrCrop

from benchmarks.overhead import FIXED, FP32, _compare, _interleaved
from benchmarks.volume import _variant
from morse.config import RendererConfig
from morse.data.geometry import to_network
from morse.data.prepare import load_eval_volumes
from morse.errors import DataError
from morse.inference.trained import TrainedRun, load_run
from morse.model import Morse
from morse.shapes import PAD_MULTIPLE

__all__ = ["VARIANTS", "network_batch", "run_trained", "format_trained"]

DEFAULTS = {"render_margin": RendererConfig.render_margin,
            "render_precision": RendererConfig.render_precision}
VARIANTS = {"plain": None, "morse": DEFAULTS, "fixed": {**DEFAULTS, **FIXED},
            "fp32": {**DEFAULTS, **FP32}}
"""Renderer off; the default budget and precision; the paper's fixed budget; fp32 MLPs."""


def network_batch(run: TrainedRun, batch: int = 4) -> torch.Tensor:
    """Network inputs cut from the run's first test volume: (batch, C, *slice) in 2D,
    (1, C, *patch) in 3D."""
    volumes = load_eval_volumes(run.config.data, "test", run.preprocessing)
    if not volumes:
        raise DataError(f"{run.config.data.root}: no test volume")
    volume = volumes[0] if run.geometry is None else to_network(volumes[0], run.geometry)
    data = run.config.data
    if data.spatial_dims == 3:
        window = ResizeWithPadOrCrop(data.patch_size)(volume.image)
        return torch.as_tensor(np.asarray(window))[None].float()
    holding = np.flatnonzero(volume.label.reshape(-1, volume.label.shape[-1]).any(0))
    picks = holding[np.linspace(0, len(holding) - 1, batch).round().astype(int)]
    slices = torch.as_tensor(np.moveaxis(volume.image[..., picks], -1, 0)).float()
    if data.slice_size is not None:
        return F.interpolate(slices, size=tuple(data.slice_size), mode="bilinear",
                             align_corners=False)
    pad = [(-n) % PAD_MULTIPLE for n in slices.shape[:1:-1]]
    return F.pad(slices, [p for side in pad for p in (0, side)], mode="replicate")


def _step(model: Morse, renderer, base: RendererConfig, options: dict | None, image):
    def step() -> torch.Tensor:
        _variant(model, renderer, base, options)
        with torch.inference_mode():
            return model(image)

    return step


def run_trained(
    source: str, device: str = "cpu", batch: int = 4, repeats: int = 5, warmup: int = 1
) -> dict:
    """Median seconds and per-pair ratios to plain (with min-max), cells rendered per image."""
    run = load_run(source, device)
    model, renderer = run.model.eval(), run.model.renderer
    if renderer is None:
        raise DataError(f"{source}: a run without renderer has no MORSE cost to measure")
    base = renderer.config
    image = network_batch(run, batch).to(device)
    steps = {name: _step(model, renderer, base, options, image)
             for name, options in VARIANTS.items()}
    times = _interleaved(steps, torch.device(device), repeats, warmup)
    row: dict = {"run": str(source), "input": list(image.shape), "repeats": repeats,
                 **DEFAULTS}
    for name in VARIANTS:
        if name != "plain":
            _compare(row, "infer", times, name, "plain",
                     suffix="" if name == "morse" else f"_{name}")
            row[f"points_{name}"] = float(steps[name]().rendered.sum()) / image.shape[0]
    _variant(model, renderer, base, {})  # the run as it was loaded
    return row


def format_trained(row: dict) -> str:
    """One block: seconds, ratio to plain (spread) and cells rendered per image per variant."""
    lines = [f"trained run {row['run']}, input {row['input']} (medians of {row['repeats']} "
             "interleaved repeats)", f"  {'variant':<10}{'seconds':>10}{'ratio':>9}  (spread)"
             f"{'points/image':>15}", f"  {'plain':<10}{row['infer_s_plain']:>10.3f}"]
    for name in list(VARIANTS)[1:]:
        key = "infer_time_ratio" + ("" if name == "morse" else f"_{name}")
        lines.append(f"  {name:<10}{row[f'infer_s_{name}']:>10.3f}{row[key]:>9.2f}  "
                     f"({row[f'{key}_min']:.2f}-{row[f'{key}_max']:.2f})"
                     f"{row[f'points_{name}']:>15.0f}")
    return "\n".join(lines)
