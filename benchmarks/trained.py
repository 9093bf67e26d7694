"""Inference cost on a trained run's own images, where the adaptive budget has certain cells.

The overhead rows time untrained weights on noise: every cell is uncertain there, so the
adaptive budget renders its cap. Here a trained run's model segments a batch of its own test
images, as the network sees them, in turns (plain, MORSE, plain, ...):

* 2D: ``batch`` slices of the first test volume, spread evenly over the slices that hold
  foreground, resized to the run's ``data.slice_size`` (or padded as ``morse predict`` pads);
* 3D: the window of ``data.patch_size`` at the volume's centre (padded where it is smaller).

Variants (:func:`variants`): ``plain`` (renderer off), ``calibrated`` (the margin calibrated
for the run, ``morse calibrate``; absent when it has none), ``default`` (today's global default
margin), ``fixed`` (the paper's budget), ``fp32`` (the default margin, point MLPs in fp32); all
but ``fp32`` with today's default precision (``auto``), whatever the run recorded.
``points_*`` is the cells each renders per image, ``flops_ratio_*`` the floating-point
operations of the pass over the plain one (:func:`flops`; counted with fp32 point MLPs, the
same arithmetic): the ratio MORSE would take if it computed at its backbone's rate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import ResizeWithPadOrCrop
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.overhead import FIXED, FP32, _compare, _interleaved
from morse.config import RendererConfig
from morse.data.geometry import to_network
from morse.data.prepare import load_eval_volumes
from morse.errors import DataError
from morse.inference.trained import TrainedRun, load_run
from morse.model import Morse
from morse.model.budget import usable
from morse.renderer.module import MorseRenderer
from morse.shapes import PAD_MULTIPLE

__all__ = ["DEFAULTS", "flops", "flop_ratios", "network_batch", "run_trained", "format_trained",
           "variant_lines", "variants"]

DEFAULTS = {"render_margin": RendererConfig.render_margin,
            "render_precision": RendererConfig.render_precision}
"""Today's global default budget and precision."""


def variants(calibration: dict | None, fp32: bool = True) -> dict[str, dict | None]:
    """Renderer off; the run's calibrated margin (when it has one); the global default; the
    paper's fixed budget; (``fp32``) the default with fp32 point MLPs.

    >>> list(variants({"render_margin": 1.5, "reference_margin": 8.0}))
    ['plain', 'calibrated', 'default', 'fixed', 'fp32']
    """
    named: dict[str, dict | None] = {"plain": None}
    calibration = usable(calibration)  # a first-version margin is not used: nor timed
    if calibration:
        named["calibrated"] = {**DEFAULTS, "render_margin": calibration["render_margin"]}
    named.update(default=DEFAULTS, fixed={**DEFAULTS, **FIXED})
    if fp32:
        named["fp32"] = {**DEFAULTS, **FP32}
    return named


def _variant(model: Morse, renderer: MorseRenderer, base: RendererConfig,
             options: dict | None) -> None:
    """Put the model in one variant: no renderer, or the renderer with ``base`` + options."""
    model.renderer = None if options is None else renderer
    renderer.config = dataclasses.replace(base, **(options or {}))


def _addmm_inplace(self_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
    """``addmm_``'s operations, which torch's counter leaves out (the renderer accumulates
    split weights with it)."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def flops(fn: Callable[[], object]) -> int:
    """Floating-point operations ``fn`` runs (convolutions and matrix products, in place
    ones included: torch's counter; sampling and elementwise work are not counted)."""
    mapping = {torch.ops.aten.addmm_: _addmm_inplace}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def flop_ratios(model: Morse, renderer: MorseRenderer, base: RendererConfig,
                named: dict[str, dict | None], run: Callable[[], object]) -> dict[str, float]:
    """``{variant: its flops / plain's}`` of ``run`` (a pass of ``model``), each variant's
    point MLPs in fp32 (packed bf16 products are not counted; the arithmetic is the same)."""
    counts = {}
    for name, options in named.items():
        _variant(model, renderer, base, None if options is None else {**options, **FP32})
        counts[name] = flops(run)
    _variant(model, renderer, base, {})
    return {name: counts[name] / max(counts["plain"], 1) for name in list(named)[1:]}


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
    named = variants(run.calibration)
    steps = {name: _step(model, renderer, base, options, image)
             for name, options in named.items()}
    times = _interleaved(steps, torch.device(device), repeats, warmup)
    row: dict = {"run": str(source), "input": list(image.shape), "repeats": repeats,
                 "variants": list(named), **DEFAULTS,
                 "calibrated_margin": (usable(run.calibration) or {}).get("render_margin")}
    for name in list(named)[1:]:
        _compare(row, "infer", times, name, "plain", suffix=f"_{name}")
        row[f"points_{name}"] = float(steps[name]().rendered.sum()) / image.shape[0]
    ratios = flop_ratios(model, renderer, base, named, lambda: model(image))
    row.update({f"flops_ratio_{name}": ratio for name, ratio in ratios.items()})
    _variant(model, renderer, base, {})  # the run as it was loaded
    return row


def format_trained(row: dict) -> str:
    """One block: seconds, ratio to plain (spread) and cells rendered per image per variant."""
    lines = [f"trained run {row['run']}, input {row['input']} (medians of {row['repeats']} "
             "interleaved repeats)", *variant_lines(row, "infer_", "points_")]
    if row.get("calibrated_margin") is None:
        lines.append("  (no calibrated row: the run holds no calibration; morse calibrate RUN)")
    return "\n".join(lines)


def variant_lines(row: dict, prefix: str, points: str) -> list[str]:
    """The table of ``row['variants']``: seconds, ratio to plain (spread), points per image."""
    lines = [f"  {'variant':<12}{'seconds':>10}{'ratio':>9}  {'(spread)':<13}{'points/image':>13}"
             f"{'flops ratio':>13}",
             f"  {'plain':<12}{row[f'{prefix}s_plain']:>10.3f}"]
    for name in row["variants"][1:]:
        key = f"{prefix}time_ratio_{name}"
        spread = f"({row[f'{key}_min']:.2f}-{row[f'{key}_max']:.2f})"
        lines.append(f"  {name:<12}{row[f'{prefix}s_{name}']:>10.3f}{row[key]:>9.2f}  "
                     f"{spread:<13}{row[f'{points}{name}']:>13.0f}"
                     f"{row.get(f'flops_ratio_{name}', float('nan')):>13.2f}")
    return lines
