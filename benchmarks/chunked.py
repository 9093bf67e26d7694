"""Peak memory and time of segmenting a large volume: chunked (sliding windows, points rendered
in chunks, stitching on the CPU) against unchunked (the whole volume in one pass).

Each mode runs in a fresh process so that its peak memory is its own (CUDA: allocator peak;
CPU: growth of the peak resident memory over the process' size before prediction).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import torch

from benchmarks import ROOT
from benchmarks.memory import peak_rss_mib
from morse.backbone import UNet
from morse.model import Morse
from morse.model.settings import InferenceConfig
from morse.model.volumes import predict_volume

__all__ = ["run_chunked", "format_chunked", "MODES"]

MODES = {
    "unchunked": {"patch_size": None, "render_chunk": None, "sw_device": None},
    "chunked": {"patch_size": (96, 96, 96), "render_chunk": 4096, "sw_device": "cpu"},
}


def _probe(size: tuple[int, int, int], mode: str, device: str) -> dict[str, float]:
    torch.manual_seed(0)
    options = MODES[mode]
    model = Morse(UNet(3, 1, 4, width=0.5), 4, 3, render_points=8192,
                  render_chunk=options["render_chunk"], expert_width=128, head_width=128)
    image = np.random.default_rng(0).standard_normal((1, *size)).astype(np.float32)
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch_device)
    base = peak_rss_mib()
    start = time.perf_counter()
    predict_volume(model, image, InferenceConfig(
        device=torch_device, patch_size=options["patch_size"], sw_batch_size=1, overlap=0.25,
        sw_device=options["sw_device"]))
    seconds = time.perf_counter() - start
    if torch_device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(torch_device) / 2**20
    else:
        peak = peak_rss_mib() - base
    return {"seconds": seconds, "peak_mib": peak}


def run_chunked(size: tuple[int, int, int], device: str = "cpu") -> dict:
    """Both modes on a random volume of ``size``; each in its own process."""
    results: dict = {"size": list(size), "device": device}
    for mode in MODES:
        code = (
            "import json; from benchmarks.chunked import _probe; "
            f"print(json.dumps(_probe({tuple(size)!r}, {mode!r}, {device!r})))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            tail = out.stderr.strip().splitlines()[-1:] or ["failed"]
            results[mode] = {"error": tail[0]}
        else:
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def format_chunked(results: dict) -> str:
    size = "x".join(map(str, results["size"]))
    lines = [f"predicting a {size} volume on {results['device']}",
             f"  {'mode':<12}{'seconds':>10}{'peak MiB':>12}"]
    for mode in MODES:
        row = results[mode]
        if "error" in row:
            lines.append(f"  {mode:<12}  failed: {row['error']}")
        else:
            lines.append(f"  {mode:<12}{row['seconds']:>10.1f}{row['peak_mib']:>12.0f}")
    return "\n".join(lines)
