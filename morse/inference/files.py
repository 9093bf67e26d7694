"""Segment new NIfTI scans: label maps written on each input's own grid, header kept.

:func:`segment_files` is the one prediction path from raw NIfTI files to label maps; ``morse
predict`` writes what it returns and ``morse evaluate`` scores it on held-out folders.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from morse.data.files import group_channel_files, strip_ending
from morse.data.intensity import check_record, raw_to_network
from morse.data.nifti import (
    CHANNEL_GRID_FIX,
    UNORIENTED,
    grid_problems,
    image_grid,
    read_nifti,
    write_array_like,
    write_label_like,
)
from morse.data.validate import image_problem
from morse.data.volume import Volume
from morse.device import resolve_device, set_threads
from morse.errors import DataError
from morse.inference.trained import TrainedRun, load_run, predict_case, resolve_checkpoint
from morse.io.lock import FolderLock
from morse.io.progress import Progress
from morse.model.budget import Budget, RenderedShare, budget_text
from morse.model.volumes import VolumePrediction

__all__ = ["ScanPrediction", "predict_files", "segment_files"]


def _read_case(case: str, files: list[Path], in_channels: int) -> Volume:
    """The case's image (C, *S) from its channel files (each (*S) or (*S, C_file))."""
    arrays, first = [], None
    for path in files:
        array, affine, _ = read_nifti(path)
        if first is None:
            first = (array.shape[:3], affine)
        else:
            grid = grid_problems(array.shape[:3], affine, *first, f"channel 0 {files[0]}",
                                 fix=CHANNEL_GRID_FIX)
            if grid:
                raise DataError(f"{path}: {grid[0]}")
        if array.ndim == 2:  # one slice saved as H x W: a volume of one slice, not W channels
            array = array[..., None]
        arrays.extend([array] if array.ndim == 3 else np.moveaxis(array, -1, 0))
    if len(arrays) != in_channels:
        raise DataError(
            f"{files[0]}: case {case} has {len(arrays)} channel(s) but the model takes "
            f"{in_channels}; pass all channel files (CASE_0000..CASE_{in_channels - 1:04d})"
        )
    image = np.stack(arrays).astype(np.float32)
    problem = image_problem(image)
    if problem:
        raise DataError(f"{files[0]}: {problem}")
    return Volume(image, None, first[1], case, str(files[0]))


def _to_file_axes(array: np.ndarray, axis_order: list[int], leading: int = 0) -> np.ndarray:
    """Undo the record's ``axis_order`` on the last three axes (``leading`` axes kept)."""
    inverse = np.argsort(axis_order)
    return np.transpose(array, [*range(leading), *(leading + int(a) for a in inverse)])


@dataclass
class ScanPrediction:
    """One case segmented from its NIfTI files, every map on the first file's grid.

    Attributes:
        case: case name.
        reference: the first channel file (its grid, affine and header are the outputs').
        prediction: coarse, rendered (*S) int64 and rendered_points (*S) bool (probabilities
            (K, *S) when asked for), all in the file's axis order.
        seconds: time spent on the case (reading, network, back to the file's axes).
        image: the scan as read (C, *S) float32, raw intensities in the file's axis order.
    """

    case: str
    reference: Path
    prediction: VolumePrediction
    seconds: float
    image: np.ndarray | None = None


def _check_oriented(path: Path, needed: bool, bar: Progress | None = None) -> None:
    """A scan without orientation is refused when the model resamples (``needed``): its
    voxels cannot be placed in RAS; otherwise segmented as stored, with a warning."""
    if image_grid(path).oriented:
        return
    if needed:
        raise DataError(f"{path}: {UNORIENTED}, and this model resamples scans to RAS at its "
                        "training spacing; set the scan's orientation (e.g. nibabel's "
                        "set_qform, fslorient) first")
    warning = (f"warning: {path}: {UNORIENTED}; segmenting its voxel grid as stored (nnU-Net "
               "reads it as identity orientation); the label map gets the same header")
    if bar is not None:
        bar.write(warning)  # above the bar on a terminal
    else:
        print(warning, file=sys.stderr)


def segment_files(
    run: TrainedRun,
    groups: dict[str, list[Path]],
    device: torch.device,
    *,
    probabilities: bool = False,
    progress: bool = True,
) -> Iterator[ScanPrediction]:
    """Segment cases of raw NIfTI files as ``morse predict`` does, one after the other.

    Each scan is brought to what the network was trained on by the run's preprocessing record
    (axis order, the dataset files' own preprocessing, the run's normalisation), and every map
    comes back in the scan's own axis order. A progress bar over cases goes to stderr.

    Args:
        run: the trained run (its ``preprocessing`` record is required).
        groups: ``{case: channel files}`` as from :func:`morse.data.files.group_channel_files`.
        device: where the network runs.
        probabilities: also return the rendered softmax (K, *S).
        progress: show a bar over cases with the last case's time (tqdm, stderr) on a
            terminal, or one line per case on stderr otherwise.
    """
    record = check_record(run.preprocessing, f"checkpoint {run.path}")
    bar = Progress(len(groups), unit="case", stream=sys.stderr, enabled=progress)
    try:
        for number, (case, files) in enumerate(groups.items(), 1):
            start = time.perf_counter()
            prediction, image = _segment_case(run, record, case, files, device, probabilities,
                                              bar)
            seconds = time.perf_counter() - start
            bar.update()
            bar.report(f"[{number}/{len(groups)}] {case}: {seconds:.2f} s",
                       postfix=f"{case}: {seconds:.2f} s")
            yield ScanPrediction(case, files[0], prediction, seconds, image)
    finally:
        bar.close()


def _segment_case(
    run: TrainedRun, record: dict, case: str, files: list[Path], device: torch.device,
    probabilities: bool, bar: Progress,
) -> tuple[VolumePrediction, np.ndarray]:
    """One case's maps from its raw channel files, and its image (C, *S) as read; all in the
    files' axis order."""
    _check_oriented(files[0], run.geometry is not None, bar)
    volume = _read_case(case, files, record["in_channels"])
    network_input = replace(volume, image=raw_to_network(volume.image, record))
    with torch.no_grad():
        raw = predict_case(run.model, run.config, network_input, device, run.geometry,
                           probabilities=probabilities)
    order = record["axis_order"]
    maps = VolumePrediction(
        coarse=_to_file_axes(raw.coarse, order),
        rendered=_to_file_axes(raw.rendered, order),
        rendered_points=_to_file_axes(raw.rendered_points, order),
        probabilities=None if raw.probabilities is None
        else _to_file_axes(raw.probabilities, order, leading=1),
    )
    return maps, volume.image


def predict_files(
    checkpoint: str | Path,
    inputs: list[str | Path],
    out_dir: str | Path,
    *,
    probabilities: bool = False,
    points: bool = False,
    coarse: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = True,
    tta: bool | None = None,
    threads: int | None = None,
    budget: Budget | None = None,
) -> list[Path]:
    """Segment NIfTI files; writes ``CASE.nii.gz`` label maps (and optional maps) to out_dir.

    Scans go through :func:`segment_files`; a checkpoint without a preprocessing record is
    refused.

    Args:
        checkpoint: checkpoint file or run folder.
        inputs: NIfTI files; nnU-Net channel files of one case are grouped.
        out_dir: output folder (created).
        probabilities: also write ``CASE_probabilities.nii.gz`` (X, Y, Z, K) float32.
        points: also write ``CASE_points.nii.gz``, 1 where the renderer re-predicted.
        coarse: also write ``CASE_coarse.nii.gz``, the backbone's own label map.
        overwrite: replace existing outputs (default: refuse, naming the file).
        progress: show a progress bar over cases on stderr.
        tta: flip test-time augmentation on or off (None: the run's ``eval.tta``).
        threads: CPU threads of torch (None: the run's ``train.threads``).
        budget: the render budget (:mod:`morse.model.budget`; None: calibrated where the
            checkpoint holds a calibration, else the run's default); said at the end in one
            line on stderr, with the share of voxels rendered.
    """
    torch_device = resolve_device(device)
    resolve_checkpoint(checkpoint)  # the cheap checks first: the run, then every input
    paths = [Path(p) for p in inputs]
    for path in paths:  # every input a readable scan before the model is loaded
        if strip_ending(path.name) is None:
            raise DataError(f"{path}: not a NIfTI file (.nii or .nii.gz)")
        image_grid(path)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: is a file; -o names the output folder")
    run = load_run(checkpoint, torch_device, tta=tta, budget=budget)
    set_threads(threads if threads is not None else run.config.train.threads)
    if points and run.model.renderer is None:
        raise DataError(f"{run.path}: the renderer is off (model.renderer=false), so no voxel is "
                        "re-predicted; predict without --points")
    in_channels = int(check_record(run.preprocessing, f"checkpoint {run.path}")["in_channels"])
    groups = group_channel_files(paths, in_channels)
    wanted = ("rendered",) + tuple(name for name, on in (
        ("coarse", coarse), ("probabilities", probabilities), ("points", points)) if on)
    with FolderLock(out_dir, "morse predict"):
        plan = plan_outputs(groups, out_dir, wanted, overwrite)
        written, rendered = [], RenderedShare()
        for scan in segment_files(run, groups, torch_device, probabilities=probabilities,
                                  progress=progress):
            written += _write_maps(scan, plan[scan.case])
            rendered.add(scan.prediction.rendered_points)
    if progress and run.model.renderer is not None:
        print(budget_text(run.budget(), rendered.share), file=sys.stderr)
    return written


MAP_SUFFIXES = {"rendered": "", "coarse": "_coarse", "probabilities": "_probabilities",
                "points": "_points"}
"""The file of each map of case CASE is ``CASE<suffix>.nii.gz``."""


def plan_outputs(
    groups: dict[str, list[Path]], out_dir: Path, maps: tuple[str, ...], overwrite: bool
) -> dict[str, dict[str, Path]]:
    """Every path predict will write, ``{case: {map: path}}``, checked before any is written:
    no two outputs on one path, no output on an input, no existing file without
    ``overwrite``."""
    plan = {case: {name: out_dir / f"{case}{MAP_SUFFIXES[name]}.nii.gz" for name in maps}
            for case in groups}
    owner: dict[Path, str] = {}
    for case, paths in plan.items():
        for name, path in paths.items():
            if path in owner:
                raise DataError(f"{path}: both {owner[path]} and the {name} map of {case} would "
                                "be written there; rename one of the inputs")
            owner[path] = f"the {name} map of {case}"
    inputs = {file.resolve() for files in groups.values() for file in files}
    clash = [path for path in owner if path.resolve() in inputs]
    if clash:
        raise DataError(f"{clash[0]}: is one of the inputs and would be replaced by "
                        f"{owner[clash[0]]}; write the predictions to another -o folder")
    existing = [path for path in owner if path.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise DataError(f"{existing[0]}: already exists{more}; pass --overwrite or another -o "
                        "folder")
    return plan


def _write_maps(scan: ScanPrediction, paths: dict[str, Path]) -> list[Path]:
    """The planned maps of one scan, on its grid with its header."""
    prediction, reference = scan.prediction, scan.reference
    maps = {
        "rendered": lambda path: write_label_like(path, prediction.rendered, reference),
        "coarse": lambda path: write_label_like(path, prediction.coarse, reference),
        "probabilities": lambda path: write_array_like(path, prediction.probabilities,
                                                       reference, channel_axis=0),
        "points": lambda path: write_label_like(path, prediction.rendered_points.astype(np.uint8),
                                                reference),
    }
    return [maps[name](path) for name, path in paths.items()]
