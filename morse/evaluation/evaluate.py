"""Evaluate a trained model on whole volumes: coarse and rendered outputs side by side."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from morse.data.prepare import load_eval_volumes
from morse.data.volume import Volume
from morse.device import resolve_device
from morse.errors import DataError
from morse.evaluation.tables import format_table, summarise, write_metrics
from morse.inference.trained import TrainedRun, load_run, predict_case
from morse.io import atomic_open
from morse.io.progress import Progress
from morse.metrics import MetricSettings, case_metrics
from morse.model.budget import Budget, RenderedShare, budget_text
from morse.model.volumes import VolumePrediction

__all__ = ["distance_unit", "evaluate", "example_slice", "example_slices",
           "metric_spacing", "save_examples"]


def evaluate(
    source: str | Path | TrainedRun,
    out_dir: str | Path | None = None,
    *,
    data_root: str | None = None,
    subset: str = "test",
    device: str = "auto",
    checkpoint: str | None = None,
    verbose: bool = True,
    require_cases: bool = True,
    budget: Budget | None = None,
) -> dict:
    """Score a checkpoint on a data subset; write metrics.json, metrics.csv and examples.npz.

    Args:
        source: checkpoint or run folder (or a run already loaded).
        out_dir: where results go (default: the run folder for "test", where ``morse report``
            reads them; ``eval_val`` inside it for "val").
        data_root: use this dataset folder instead of the one in the run's config.
        subset: "test" or "val".
        checkpoint: for a run folder, "best" or "last"; default the run's
            ``eval.checkpoint``. The file scored and its step are recorded in metrics.json.
        require_cases: refuse an empty subset (False: say so and return ``{}``).
        budget: the render budget when ``source`` is loaded here (:mod:`morse.model.budget`;
            None: calibrated). metrics.json records the one used, by name and values, and
            the share of voxels rendered.

    Returns:
        ``{"coarse": summary, "rendered": summary}`` (see ``morse.evaluation.tables.summarise``).

    Raises:
        DataError: no case in the subset, or cases with and without a known voxel size mixed.
    """
    torch_device = resolve_device(device)
    run = source if isinstance(source, TrainedRun) else load_run(source, torch_device, checkpoint,
                                                                 budget=budget)
    model, cfg, class_names = run.model, run.config, run.class_names
    if data_root is not None:
        cfg = replace(cfg, data=replace(cfg.data, root=data_root))
    settings = MetricSettings(tuple(cfg.eval.nsd_tolerances_mm), cfg.eval.biou_width_mm)
    volumes = load_eval_volumes(cfg.data, subset, run.preprocessing,
                                saved_split=run.path.parent / "split.json")
    if not volumes and require_cases:
        raise DataError(f"{cfg.data.root}: the {subset} subset holds no case to evaluate")
    if verbose:
        print(f"{subset} subset of the training split ({len(volumes)} case(s)), {cfg.data.root}")
    if not volumes:
        return {}
    unit = distance_unit(volumes)
    default_dir = run.path.parent if subset == "test" else run.path.parent / f"eval_{subset}"
    out_dir = Path(out_dir) if out_dir else default_dir
    outputs = ("coarse", "rendered") if model.renderer is not None else ("coarse",)
    results: dict[str, dict] = {output: {} for output in outputs}
    examples, rendered = [], RenderedShare()
    per_volume = -(-cfg.eval.num_examples // len(volumes))
    bar = Progress(len(volumes), unit="case", stream=sys.stderr, enabled=verbose)
    for number, volume in enumerate(volumes, 1):
        start = time.perf_counter()
        prediction = predict_case(model, cfg, volume, torch_device, run.geometry, gate=True)
        for output in outputs:
            results[output][volume.case_id] = case_metrics(
                getattr(prediction, output), volume.label, len(class_names),
                metric_spacing(volume), settings,
            )
        examples += [example_slice(volume, prediction, k, outputs)
                     for k in example_slices(volume.label, per_volume)]
        rendered.add(prediction.rendered_points)
        seconds = time.perf_counter() - start
        bar.update()
        bar.report(f"[{number}/{len(volumes)}] {volume.case_id}: {seconds:.2f} s",
                   postfix=f"{volume.case_id}: {seconds:.2f} s")
    bar.close()
    scored = {"file": run.path.name, "step": run.step}
    budget_used = rendered.record(run.budget())
    write_metrics(out_dir, results, class_names, distance_unit=unit, settings=settings,
                  checkpoint=scored, extra={"tta": cfg.eval.tta, **budget_used})
    save_examples(out_dir / "examples.npz", examples[: cfg.eval.num_examples])
    summaries = {name: summarise(per_case, class_names) for name, per_case in results.items()}
    if verbose:
        if model.renderer is None:
            print("renderer off (model.renderer=false): only the backbone's output is scored")
        else:
            print(budget_text(budget_used["budget"], rendered.share))
        print(format_table(summaries, class_names, unit))
        tta = ", flip TTA" if cfg.eval.tta else ""
        print(f"scored {run.path} (step {run.step}{tta}); NSD tolerances "
              f"{list(settings.nsd_tolerances)} {unit}, boundary IoU band {settings.biou_width} "
              f"{unit}; wrote {out_dir / 'metrics.json'}")
    return summaries


def distance_unit(volumes: Sequence[Volume]) -> str:
    """``"mm"`` when every volume knows its voxel size, ``"voxels"`` when none does.

    >>> distance_unit([Volume(np.zeros((1, 2, 2)), None, spacing_known=False)])
    'voxels'

    Raises:
        DataError: some volumes know their spacing and some do not (the message names both).
    """
    known = {volume.spacing_known for volume in volumes}
    if len(known) > 1:
        with_mm = [v.case_id for v in volumes if v.spacing_known]
        without = [v.case_id for v in volumes if not v.spacing_known]
        raise DataError(
            f"cases {with_mm[:3]} have a voxel size in mm and cases {without[:3]} have none: "
            "distances would mix mm and voxels; give every case its spacing (or none)"
        )
    return "voxels" if known == {False} else "mm"


def metric_spacing(volume: Volume) -> tuple[float, ...]:
    """The spacing distances are measured with: the volume's in mm, or ones (voxels)."""
    if volume.spacing_known:
        return volume.spacing
    return (1.0,) * volume.spatial_dims


def example_slices(label: np.ndarray, count: int, spacing: int = 4) -> list[int]:
    """Axial slices showing the most anatomy (most classes, then most foreground), apart.

    >>> label = np.zeros((4, 4, 10), int); label[..., 2] = 1; label[0, 0, 2] = 2
    >>> label[..., 3] = 1; label[..., 8] = 1
    >>> example_slices(label, 2)
    [2, 8]
    """
    flat = label.reshape(-1, label.shape[-1])
    classes = np.array([np.unique(flat[:, k]).size for k in range(flat.shape[1])])
    score = classes * flat.shape[0] + (flat > 0).sum(0)
    chosen: list[int] = []
    for index in np.argsort(-score, kind="stable"):
        if len(chosen) == count:
            break
        if all(abs(int(index) - k) >= spacing for k in chosen):
            chosen.append(int(index))
    return chosen


def example_slice(
    volume: Volume, prediction: VolumePrediction, index: int, outputs: Sequence[str]
) -> dict:
    """One axial slice of a case and its predictions (a 2D view of a 2D or 3D case): the
    first channel, the truth, each output and, when present, the rendered points and gate."""
    example = {"image": volume.image[0][..., index], "truth": volume.label[..., index],
               "case_id": volume.case_id, "slice": index}
    example.update({output: getattr(prediction, output)[..., index] for output in outputs})
    if "rendered" in outputs:
        example["points"] = prediction.rendered_points[..., index]
    if prediction.gate is not None:
        example["gate"] = prediction.gate[..., index]
    return example


def save_examples(path: Path, examples: list[dict]) -> None:
    """Write :func:`example_slice` dicts as the ``examples.npz`` that ``morse report`` shows
    (each array padded to the largest slice); nothing when there are none."""
    if not examples:
        return
    shape = np.max([e["image"].shape for e in examples], axis=0)
    keys = [key for key in examples[0] if key not in ("case_id", "slice")]
    arrays = {key: np.stack([_pad(e[key], shape) for e in examples]) for key in keys}
    arrays["case_id"] = np.array([e["case_id"] for e in examples])
    arrays["slice"] = np.array([e["slice"] for e in examples])
    with atomic_open(path) as handle:
        np.savez_compressed(handle, **arrays)


def _pad(array: np.ndarray, shape) -> np.ndarray:
    pads = [(0, int(s) - n) for s, n in zip(shape, array.shape)]
    return np.pad(array, pads)
