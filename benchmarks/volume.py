"""What a user waits for: predicting a whole test volume, plain against MORSE with each budget
(``predict_volume`` through ``predict_case``, timed in turns: the interleaved medians and the
min-max of the per-pair ratios to plain).

With a trained run (``source``) its model and its first test volume are used, on the network's
grid; the variants are those of :func:`benchmarks.trained.variants` without fp32
(plain, calibrated where the run has a calibration, the global default, the paper's fixed
budget). Without a run, the demo preset's data and a model with untrained weights (every cell
is then uncertain, so the adaptive budget renders its cap). Skipped, with a note, when the data
is absent. ``points_*`` is the voxels each renders per image: per slice for a 2D model, per
volume for a 3D one; ``flops_ratio_*`` as in :mod:`benchmarks.trained`.
"""

from __future__ import annotations

import torch

from benchmarks.overhead import _compare, _interleaved
from benchmarks.trained import _variant, flop_ratios, variant_lines, variants
from morse.config import load_config
from morse.data.formats import data_format
from morse.data.geometry import to_network
from morse.data.prepare import load_eval_volumes
from morse.errors import DataError
from morse.inference.trained import load_run, predict_case
from morse.model.budget import usable
from morse.model.build import build_model

__all__ = ["run_volume", "format_volume"]


def _load(source: str | None, device: str):
    """The model (eval), its config, the first test volume and the run's calibration;
    DataError when data is absent."""
    calibration = None
    if source is not None:
        run = load_run(source, device)
        model, cfg, calibration = run.model, run.config, run.calibration
        volumes = load_eval_volumes(cfg.data, "test", run.preprocessing)
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
    return model, cfg, volumes[0], calibration


def run_volume(source: str | None = None, device: str = "cpu", repeats: int = 3) -> dict:
    """Median seconds per variant (interleaved, one warm-up round), ratios to plain with their
    spread, voxels rendered per image by each."""
    try:
        model, cfg, volume, calibration = _load(source, device)
    except (DataError, OSError) as error:
        return {"note": f"skipped (no demo data): {error}"}
    renderer, base = model.renderer, model.renderer.config
    named = variants(calibration, fp32=False)

    def step(options):
        def predict():
            _variant(model, renderer, base, options)
            return predict_case(model, cfg, volume, device)
        return predict

    steps = {name: step(options) for name, options in named.items()}
    times = _interleaved(steps, torch.device(device), repeats, warmup=1)
    images = volume.image.shape[-1] if model.spatial_dims == 2 else 1
    row: dict = {"run": source, "volume": volume.case_id, "shape": list(volume.image.shape[1:]),
                 "weights": "trained" if source else "untrained", "repeats": repeats,
                 "variants": list(named), "images": images,
                 "per": "slice" if model.spatial_dims == 2 else "volume",
                 "calibrated_margin": (usable(calibration) or {}).get("render_margin")}
    for name in list(named)[1:]:
        _compare(row, "volume", times, name, "plain", suffix=f"_{name}")
        row[f"points_{name}"] = int(steps[name]().rendered_points.sum()) / images
    ratios = flop_ratios(model, renderer, base, named,
                         lambda: predict_case(model, cfg, volume, device))
    row.update({f"flops_ratio_{name}": ratio for name, ratio in ratios.items()})
    _variant(model, renderer, base, {})
    return row


def format_volume(row: dict) -> str:
    """One block: seconds, ratio to plain (spread) and voxels rendered per image per variant."""
    if "note" in row:
        return f"whole-volume prediction: {row['note']}"
    per = row["per"]
    lines = [f"whole-volume prediction, {row['volume']} {row['shape']} ({row['weights']} "
             f"weights{', ' + row['run'] if row['run'] else ''}), medians of {row['repeats']} "
             f"interleaved repeats, points per {per}", *variant_lines(row, "volume_", "points_")]
    return "\n".join(lines)
