"""Peak memory and time of segmenting a large volume: chunked (sliding windows, points rendered
in chunks, stitching on the CPU) against unchunked (the whole volume in one pass).

Each mode runs in a fresh process so that its peak memory is its own (CUDA: allocator peak;
CPU: growth of the peak resident memory over the process' size before prediction).

``--ct`` is a CT-sized volume (512 x 512 x 300, :data:`CT_SIZE`), chunked only by default: its
output maps alone are about 4.5 GiB on the CPU (61 bytes a voxel for 4 classes: see
``predict_volume``'s memory note), and the unchunked pass would hold the network's
activations for all of it. ``host_peak_mib`` is the CPU side (on CUDA too: the stitching).
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

__all__ = ["CT_SIZE", "DEFAULT_SIZE", "run_chunked", "format_chunked", "MODES"]

DEFAULT_SIZE = (256, 256, 160)
CT_SIZE = (512, 512, 300)
"""An abdominal CT's size (x, y, slices)."""

MODES = {
    "unchunked": {"patch_size": None, "render_chunk": None, "sw_device": None},
    "chunked": {"patch_size": (96, 96, 96), "render_chunk": 4096, "sw_device": "cpu"},
}


def _probe(size: tuple[int, int, int], mode: str, device: str,
           patch: tuple[int, int, int] | None = None, renderer: bool = True
           ) -> dict[str, float]:
    torch.manual_seed(0)
    options = dict(MODES[mode])
    if patch is not None and options["patch_size"] is not None:
        options["patch_size"] = patch
    model = Morse(UNet(3, 1, 4, width=0.5), 4, 3, renderer=renderer, render_points=8192,
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
    host = peak_rss_mib() - base
    if torch_device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(torch_device) / 2**20
    else:
        peak = host
    return {"seconds": seconds, "peak_mib": peak, "host_peak_mib": host}


def _child(size: tuple[int, int, int], mode: str, device: str,
           patch: tuple[int, int, int] | None, renderer: bool) -> dict[str, float | str]:
    """``_probe`` in a fresh process, so that its peak memory is its own."""
    code = (
        "import json; from benchmarks.chunked import _probe; print(json.dumps(_probe("
        f"{tuple(size)!r}, {mode!r}, {device!r}, {patch!r}, {renderer!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or ["failed"]
        return {"error": tail[0]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_chunked(size: tuple[int, int, int], device: str = "cpu",
                modes: list[str] | None = None, patch: tuple[int, int, int] | None = None,
                plain: bool = True) -> dict:
    """``modes`` (default both) on a random volume of ``size``, MORSE under ``results[mode]``
    and (``plain``) the backbone alone under ``results["plain"][mode]``; each in its own
    process. ``patch``: the chunked mode's window (default 96^3)."""
    results: dict = {"size": list(size), "device": device, "threads": torch.get_num_threads(),
                     "patch": list(patch or MODES["chunked"]["patch_size"])}
    for mode in modes or list(MODES):
        if plain:
            results.setdefault("plain", {})[mode] = _child(size, mode, device, patch, False)
        results[mode] = _child(size, mode, device, patch, True)
    return results


def format_chunked(results: dict) -> str:
    size = "x".join(map(str, results["size"]))
    lines = [f"predicting a {size} volume on {results['device']} "
             f"({results.get('threads', '?')} threads)",
             f"  {'mode':<12}{'model':<8}{'seconds':>10}{'peak MiB':>12}"]
    for mode in (mode for mode in MODES if mode in results):
        rows = {"plain": results.get("plain", {}).get(mode), "morse": results[mode]}
        for model, row in ((name, row) for name, row in rows.items() if row is not None):
            if "error" in row:
                lines.append(f"  {mode:<12}{model:<8}  failed: {row['error']}")
            else:
                lines.append(f"  {mode:<12}{model:<8}{row['seconds']:>10.1f}"
                             f"{row['peak_mib']:>12.0f}")
    return "\n".join(lines)
