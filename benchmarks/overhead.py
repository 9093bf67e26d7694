"""What MORSE costs on top of its backbone, and what the authors' dense experts would cost.

Rows (each measured on the same input with the same settings). Timings that are compared are
interleaved (plain, MORSE, plain, MORSE, ...) after a warm-up, so a noisy neighbour slows both
alike; each ratio is the median of the per-pair ratios, printed with their spread (min-max).

* ``train``: one SGD step (forward, loss, backward, update) of MORSE over the plain backbone
  (the same network with the renderer off), with the default ``render_precision`` (``auto``:
  bf16 point MLPs where the device has bf16) and with fp32 point MLPs.
* ``memory``: peak memory of a training step, MORSE over plain (CUDA: allocator peak; CPU:
  growth of the process' peak resident memory over its size before the first step, each
  variant in a fresh process).
* ``infer``: an inference forward pass over the plain backbone's forward, with the adaptive
  budget (the default: uncertain cells only, at most ``render_points`` x ``render_steps``)
  and with the paper's fixed budget; ``points`` is the cells rendered per image by each.
  Untrained weights leave every cell uncertain, so here the adaptive budget renders its cap
  (``benchmarks.trained`` times a trained run's model on its own slices). ``fp32``: the
  adaptive budget with the point MLPs in fp32 (``model.render_precision=fp32``).
* ``dense_experts``: the authors' design, experts and a 3x3 conv gate on feature maps
  upsampled to full resolution before sampling the points, over ours (experts and gate on the
  sampled points only), same widths, forward + backward of the fusion alone (3D: forward only,
  since the dense maps of a 96^3 patch do not fit a training step in 24 GiB).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from benchmarks import ROOT
from benchmarks.memory import peak_rss_mib
from morse.backbone import UNet
from morse.losses import MorseLoss
from morse.model import Morse
from morse.renderer.experts import StochasticExperts
from morse.renderer.points import point_sample, sample_training_points

__all__ = ["SETTINGS", "run_overhead", "format_rows"]


@dataclass(frozen=True)
class Setting:
    name: str
    spatial_dims: int
    size: int
    batch: int
    num_classes: int = 9
    width: float = 1.0
    renderer: tuple[tuple[str, Any], ...] = ()
    """``RendererConfig`` fields for every MORSE row (e.g. (("expert_width", 128),))."""


FIXED = {"render_margin": None}
"""The paper's fixed budget (the default is adaptive: ``RendererConfig.render_margin``)."""
FP32 = {"render_precision": "fp32"}
"""Point MLPs in fp32 (the default, ``auto``, is bf16 where the device has it)."""

SETTINGS = {
    "2d": Setting("2D UNet 256x256, batch 4", 2, 256, 4),
    "3d": Setting("3D UNet 96^3, batch 1", 3, 96, 1),
}


def _model(setting: Setting, renderer: bool, **options: Any) -> Morse:
    torch.manual_seed(0)
    backbone = UNet(setting.spatial_dims, 1, setting.num_classes, width=setting.width)
    return Morse(backbone, setting.num_classes, setting.spatial_dims, renderer=renderer,
                 **{**dict(setting.renderer), **options})


def _inputs(setting: Setting, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (setting.batch, 1, *([setting.size] * setting.spatial_dims))
    image = torch.randn(shape, device=device)
    label = torch.randint(0, setting.num_classes, shape, device=device)
    return image, label


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _interleaved(
    steps: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds of each step, measured in turns (A, B, A, B, ...) after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(repeats):
        for label, fn in steps.items():
            times[label].append(_timed(fn, device))
    return times


def _compare(row: dict[str, float], name: str, times: dict[str, list[float]],
             numerator: str, denominator: str, suffix: str = "") -> None:
    """Medians of all, the median per-pair ratio and its min-max spread, into ``row``."""
    ratios = [a / b for a, b in zip(times[numerator], times[denominator])]
    for label, values in times.items():
        row[f"{name}_s_{label}"] = statistics.median(values)
    row[f"{name}_time_ratio{suffix}"] = statistics.median(ratios)
    row[f"{name}_time_ratio{suffix}_min"] = min(ratios)
    row[f"{name}_time_ratio{suffix}_max"] = max(ratios)


def _train_step(
    setting: Setting, renderer: bool, device: torch.device, **options: Any
) -> Callable[[], None]:
    model = _model(setting, renderer, **options).to(device).train()
    loss_fn = MorseLoss(setting.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    image, label = _inputs(setting, device)

    def step() -> None:
        loss, _ = loss_fn(model(image), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _infer_step(
    setting: Setting, renderer: bool, device: torch.device, **options: Any
) -> Callable[[], None]:
    model = _model(setting, renderer, **options).to(device).eval()
    image, _ = _inputs(setting, device)

    def step() -> None:
        with torch.inference_mode():
            model(image)

    return step


def _points_per_image(setting: Setting, device: torch.device, **options: Any) -> float:
    """Cells the renderer re-predicts per image (mean over the batch)."""
    model = _model(setting, True, **options).to(device).eval()
    image, _ = _inputs(setting, device)
    with torch.inference_mode():
        return float(model(image).rendered.sum()) / setting.batch


class DenseExperts(nn.Module):
    """The authors' fusion: per-scale experts (1x1 convs) and a 3x3 conv gate on dense maps
    upsampled to full resolution, then sampled at the points."""

    def __init__(self, in_channels: list[int], spatial_dims: int, width: int = 256) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.experts = nn.ModuleList(
            nn.Sequential(conv(c, width, 1), nn.ReLU(), conv(width, width, 1), nn.ReLU())
            for c in in_channels
        )
        self.gate = conv(len(in_channels) * width, len(in_channels), 3, padding=1)

    def forward(self, features: list[torch.Tensor], size, coords: torch.Tensor) -> torch.Tensor:
        mode = "bilinear" if len(size) == 2 else "trilinear"
        dense = [
            expert(F.interpolate(f, size=size, mode=mode, align_corners=False))
            for expert, f in zip(self.experts, features)
        ]
        weights = self.gate(torch.cat(dense, 1)).softmax(1)
        fused = sum(d * weights[:, i : i + 1] for i, d in enumerate(dense))
        return point_sample(fused, coords)


def _fusion_steps(setting: Setting, device: torch.device, train: bool):
    torch.manual_seed(0)
    backbone = UNet(setting.spatial_dims, 1, setting.num_classes, width=setting.width).to(device)
    image, _ = _inputs(setting, device)
    with torch.no_grad():
        coarse, features = backbone.eval()(image)
    features = [f.detach().requires_grad_(train) for f in features]
    points = 2048 if setting.spatial_dims == 2 else 8192
    coords = sample_training_points(coarse, points)
    size = image.shape[2:]
    ours = StochasticExperts(backbone.feature_channels, stochastic=False).to(device).train()
    dense = DenseExperts(backbone.feature_channels, setting.spatial_dims).to(device).train()

    def run(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            if train:
                fn().sum().backward()
            else:
                with torch.no_grad():
                    fn()

        return step

    ours_step = run(lambda: ours([point_sample(f, coords).transpose(1, 2) for f in features])[0])
    dense_step = run(lambda: dense(features, size, coords))
    return ours_step, dense_step


def _peak_memory_child(setting: Setting, renderer: bool, device: str) -> float:
    """Peak memory (MiB) of training steps, measured in a fresh Python process."""
    code = (
        "import sys, json; from benchmarks.overhead import Setting, _memory_probe; "
        f"print(json.dumps(_memory_probe({setting!r}, {renderer}, {device!r})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    return float(json.loads(result.stdout.strip().splitlines()[-1]))


def _memory_probe(setting: Setting, renderer: bool, device: str) -> float:
    torch_device = torch.device(device)
    step = _train_step(setting, renderer, torch_device)
    if torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch_device)
        base = torch.cuda.memory_allocated(torch_device)
        step(), step()
        return (torch.cuda.max_memory_allocated(torch_device) - base) / 2**20
    base = peak_rss_mib()
    step(), step()
    return peak_rss_mib() - base


def run_overhead(
    settings: list[str], device: str = "cpu", repeats: int = 5, warmup: int = 1,
    renderer_options: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Measure every row for each setting key ("2d", "3d"); returns ratios and raw times.

    ``renderer_options``: ``RendererConfig`` fields for every MORSE row (default: the
    project's defaults, the paper's sizes); they are echoed in each row.
    """
    torch_device = torch.device(device)
    results = {}
    for key in settings:
        setting = replace(SETTINGS[key], renderer=tuple((renderer_options or {}).items()))
        row: dict[str, Any] = {"repeats": repeats, "renderer": dict(setting.renderer)}
        steps = {"plain": _train_step(setting, False, torch_device),
                 "morse": _train_step(setting, True, torch_device),
                 "fp32": _train_step(setting, True, torch_device, **FP32)}
        times = _interleaved(steps, torch_device, repeats, warmup)
        _compare(row, "train", times, "morse", "plain")
        _compare(row, "train", times, "fp32", "plain", suffix="_fp32")
        steps = {"plain": _infer_step(setting, False, torch_device),
                 "morse": _infer_step(setting, True, torch_device),
                 "fixed": _infer_step(setting, True, torch_device, **FIXED),
                 "fp32": _infer_step(setting, True, torch_device, **FP32)}
        times = _interleaved(steps, torch_device, repeats, warmup)
        _compare(row, "infer", times, "morse", "plain")
        _compare(row, "infer", times, "fixed", "plain", suffix="_fixed")
        _compare(row, "infer", times, "fp32", "plain", suffix="_fp32")
        row["points_morse"] = _points_per_image(setting, torch_device)
        row["points_fixed"] = _points_per_image(setting, torch_device, **FIXED)
        for label, renderer in (("plain", False), ("morse", True)):
            row[f"train_mib_{label}"] = _peak_memory_child(setting, renderer, device)
        row["train_memory_ratio"] = row["train_mib_morse"] / max(row["train_mib_plain"], 1e-9)
        ours, dense = _fusion_steps(setting, torch_device, train=setting.spatial_dims == 2)
        fusion = _interleaved({"dense": dense, "points": ours}, torch_device,
                              max(1, repeats // 2), warmup)
        _compare(row, "fusion", fusion, "dense", "points")
        row["dense_experts_time_ratio"] = row.pop("fusion_time_ratio")
        results[key] = row
    return results


def _ratio(row: dict[str, float], name: str, suffix: str = "") -> str:
    key = f"{name}_time_ratio{suffix}"
    return f"{row[key]:>9.2f}  ({row[f'{key}_min']:.2f}-{row[f'{key}_max']:.2f})"


def format_rows(results: dict[str, dict[str, Any]]) -> str:
    """A table a person reads: one block per setting, ratios with their min-max spread."""
    lines = []
    for key, row in results.items():
        lines.append(f"{SETTINGS[key].name} (medians of {row['repeats']:.0f} interleaved repeats)")
        if row.get("renderer"):
            lines.append("  renderer: " + ", ".join(f"{k}={v}" for k, v in row["renderer"].items()))
        lines.append(f"  {'row':<16}{'plain':>12}{'MORSE':>12}{'ratio':>9}  (spread)")
        lines.append(f"  {'train step s':<16}{row['train_s_plain']:>12.3f}"
                     f"{row['train_s_morse']:>12.3f}{_ratio(row, 'train')}")
        lines.append(f"  {'  fp32 renderer':<16}{'':>12}{row['train_s_fp32']:>12.3f}"
                     f"{_ratio(row, 'train', '_fp32')}")
        lines.append(f"  {'train peak MiB':<16}{row['train_mib_plain']:>12.0f}"
                     f"{row['train_mib_morse']:>12.0f}{row['train_memory_ratio']:>9.2f}")
        lines.append(f"  {'inference s':<16}{row['infer_s_plain']:>12.3f}"
                     f"{row['infer_s_morse']:>12.3f}{_ratio(row, 'infer')}")
        lines.append(f"  {'  fixed budget':<16}{'':>12}{row['infer_s_fixed']:>12.3f}"
                     f"{_ratio(row, 'infer', '_fixed')}")
        lines.append(f"  {'  fp32 renderer':<16}{'':>12}{row['infer_s_fp32']:>12.3f}"
                     f"{_ratio(row, 'infer', '_fp32')}")
        lines.append(f"  {'points/image':<16}{'adaptive':>12}{row['points_morse']:>12.0f}")
        lines.append(f"  {'':<16}{'fixed':>12}{row['points_fixed']:>12.0f}")
        lines.append(f"  {'fusion s':<16}{'dense':>12}{'points':>12}")
        lines.append(f"  {'':<16}{row['fusion_s_dense']:>12.3f}{row['fusion_s_points']:>12.3f}"
                     f"{row['dense_experts_time_ratio']:>9.1f}")
    return "\n".join(lines)
