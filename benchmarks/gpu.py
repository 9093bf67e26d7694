"""The GPU check, in one command: what MORSE costs over its backbone on a CUDA device.

    python -m benchmarks gpu                   # on CUDA, under 5 minutes: writes gpu_check/
    python -m benchmarks gpu --dry             # tiny sizes, two steps, on the CPU (the tests)

Rows: 2D UNet 256x256 batch 4 and 3D UNet 96^3 batch 2 (full width, the paper's renderer
sizes), each in fp32 (the point MLPs too) and under bf16 autocast (the point MLPs in bf16,
``render_precision=auto``). For each: training steps and inference passes per second, plain
backbone and MORSE timed in turns (``benchmarks.overhead``: medians, min-max of the per-pair
ratios), the peak memory of one step over what was allocated before it (CUDA allocator; not
measured on a CPU), the MORSE/plain ratios, and the cells rendered per image (untrained weights:
the adaptive budget's cap). Then the chunked CT row (``benchmarks.chunked``: 512 x 512 x 300,
96^3 windows, stitching on the CPU). ``OUT/gpu_check.json`` holds every figure,
``OUT/gpu_check.md`` the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.chunked import CT_SIZE, run_chunked
from benchmarks.overhead import Setting, _compare, _infer_step, _interleaved, _model, _train_step
from morse.device import autocast_context
from morse.io import atomic_write_text

__all__ = ["DRY", "FULL", "format_markdown", "main", "run_gpu_check"]

FULL = {
    "settings": [Setting("2D UNet 256x256, batch 4", 2, 256, 4),
                 Setting("3D UNet 96^3, batch 2", 3, 96, 2)],
    "repeats": 10, "warmup": 3, "chunked": {"size": CT_SIZE, "patch": None},
}
"""The check on a GPU."""

DRY = {
    "settings": [Setting("2D UNet 32x32, batch 2 (dry)", 2, 32, 2, 3, 0.25,
                         (("expert_width", 16), ("head_width", 16), ("num_frequencies", 8))),
                 Setting("3D UNet 32^3, batch 1 (dry)", 3, 32, 1, 3, 0.25,
                         (("expert_width", 16), ("head_width", 16), ("num_frequencies", 8)))],
    "repeats": 2, "warmup": 1, "chunked": {"size": (32, 32, 48), "patch": (32, 32, 32)},
}
"""The same code path at tiny sizes, for a CPU (the test suite runs it)."""

PRECISIONS = {"fp32": {"render_precision": "fp32"}, "bf16": {"render_precision": "auto"}}
"""The renderer's point MLPs in each row: fp32 throughout, or bf16 under bf16 autocast."""


def _under(precision: str, device: torch.device, step: Callable[[], object]) -> Callable[[], None]:
    """``step`` under ``precision``'s autocast."""
    def run() -> None:
        with autocast_context(device, precision):
            step()

    return run


def _peak_mib(step: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory of one call over what was allocated before it (CUDA; None on a CPU)."""
    if device.type != "cuda":
        step()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _points(setting: Setting, device: torch.device, precision: str) -> float:
    """Cells MORSE renders per image at inference."""
    model = _model(setting, True, **PRECISIONS[precision]).to(device).eval()
    image = torch.randn(setting.batch, 1, *([setting.size] * setting.spatial_dims), device=device)
    with torch.inference_mode(), autocast_context(device, precision):
        return float(model(image).rendered.sum()) / setting.batch


def _row(setting: Setting, precision: str, device: torch.device, repeats: int,
         warmup: int) -> dict:
    """Train and inference it/s, peak MiB and MORSE/plain ratios of one setting."""
    options = PRECISIONS[precision]
    row: dict = {"setting": setting.name, "precision": precision, "repeats": repeats}
    for mode, make in (("train", _train_step), ("infer", _infer_step)):
        steps = {name: _under(precision, device, make(setting, renderer, device, **options))
                 for name, renderer in (("plain", False), ("morse", True))}
        times = _interleaved(steps, device, repeats, warmup)
        _compare(row, mode, times, "morse", "plain")
        for name, step in steps.items():
            row[f"{mode}_it_s_{name}"] = 1 / row[f"{mode}_s_{name}"]
            row[f"{mode}_peak_mib_{name}"] = _peak_mib(step, device)
        plain, morse = row[f"{mode}_peak_mib_plain"], row[f"{mode}_peak_mib_morse"]
        row[f"{mode}_memory_ratio"] = None if plain is None else morse / max(plain, 1e-9)
        del steps
        if device.type == "cuda":
            torch.cuda.empty_cache()
    row["points_per_image"] = _points(setting, device, precision)
    return row


def run_gpu_check(device: str = "cuda", dry: bool = False) -> dict:
    """Every row of the check (``DRY`` sizes with ``dry``) and the chunked CT row."""
    plan = DRY if dry else FULL
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    rows = [_row(setting, precision, torch_device, plan["repeats"], plan["warmup"])
            for setting in plan["settings"] for precision in PRECISIONS]
    chunked = run_chunked(plan["chunked"]["size"], device, ["chunked"], plan["chunked"]["patch"])
    return {"device": torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda"
            else platform.processor() or "cpu",
            "dry": dry, "torch": torch.__version__, "cuda": torch.version.cuda, "rows": rows,
            "chunked": chunked, "seconds": time.perf_counter() - started}


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def format_markdown(result: dict) -> str:
    """The check as a Markdown table (and the chunked row below it)."""
    lines = [f"GPU check on {result['device']} (torch {result['torch']}, CUDA "
             f"{result['cuda']}{', dry run' if result['dry'] else ''}), "
             f"{result['seconds']:.0f} s", "",
             "| setting | precision | train it/s plain | train it/s MORSE | train time ratio "
             "| train peak MiB plain / MORSE | infer it/s plain | infer it/s MORSE | "
             "infer time ratio | infer peak MiB plain / MORSE | points/image |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        cells = [row["setting"], row["precision"]]
        for mode in ("train", "infer"):
            key = f"{mode}_time_ratio"
            cells += [f"{row[f'{mode}_it_s_plain']:.2f}", f"{row[f'{mode}_it_s_morse']:.2f}",
                      f"{row[key]:.2f} ({row[f'{key}_min']:.2f}-{row[f'{key}_max']:.2f})",
                      f"{_mib(row[f'{mode}_peak_mib_plain'])} / "
                      f"{_mib(row[f'{mode}_peak_mib_morse'])}"]
        cells.append(f"{row['points_per_image']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    chunked = result["chunked"]
    size, patch = (" x ".join(map(str, chunked[key])) for key in ("size", "patch"))
    lines += ["", f"Chunked prediction of a {size} volume ({patch} windows, stitching on the "
              "CPU): " + "; ".join(
                  f"{name} {_chunked_row(row)}" for name, row in (
                      ("plain", chunked.get("plain", {}).get("chunked")),
                      ("MORSE", chunked.get("chunked"))) if row is not None)]
    return "\n".join(lines) + "\n"


def _chunked_row(row: dict) -> str:
    if "error" in row:
        return f"failed: {row['error']}"
    return (f"{row['seconds']:.1f} s, device peak {row['peak_mib']:.0f} MiB, host peak "
            f"{row['host_peak_mib']:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks gpu [--dry] [--device D] [-o OUT] [--overwrite]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true",
                        help="tiny sizes and two timed steps (default device: cpu)")
    parser.add_argument("--device", default=None, help="default: cuda (--dry: cpu)")
    parser.add_argument("-o", "--output", default="gpu_check",
                        help="folder for gpu_check.json and gpu_check.md (default gpu_check)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier check")
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.dry else "cuda")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: run it on a GPU machine, or check the code path "
                     "with --dry")
    out = Path(args.output)
    paths = [out / "gpu_check.json", out / "gpu_check.md"]
    existing = [path for path in paths if path.exists()]
    if existing and not args.overwrite:
        parser.error(f"{existing[0]}: already exists; pass --overwrite or another -o folder")
    result = run_gpu_check(device, args.dry)
    table = format_markdown(result)
    atomic_write_text(paths[0], json.dumps(result, indent=2) + "\n")
    atomic_write_text(paths[1], table)
    with contextlib.suppress(BrokenPipeError):
        print(table + f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
