"""Segment new NIfTI scans: label maps written on each input's own grid, header kept."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from morse.data.intensity import check_record, raw_to_network
from morse.data.nifti import read_nifti, write_array_like, write_label_like
from morse.data.validate import image_problem
from morse.data.volume import DataError, Volume
from morse.device import resolve_device
from morse.inference.trained import load_run, predict_case

__all__ = ["predict_files", "group_channel_files"]

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def _stem(path: Path) -> str:
    name = path.name
    for ending in (".nii.gz", ".nii"):
        if name.endswith(ending):
            return name[: -len(ending)]
    raise DataError(f"{path}: not a NIfTI file (.nii or .nii.gz)")


def group_channel_files(paths: list[Path]) -> dict[str, list[Path]]:
    """Group nnU-Net channel files (``CASE_0000.nii.gz``, ``CASE_0001``...) by case.

    Files without a channel suffix are single-channel (or 4D multi-channel) cases. The
    channels of a case must run 0..C-1: a gap or a repeat raises DataError naming the file.

    >>> group_channel_files([Path("a_0001.nii.gz"), Path("a_0000.nii.gz"), Path("b.nii")])
    {'a': [PosixPath('a_0000.nii.gz'), PosixPath('a_0001.nii.gz')], 'b': [PosixPath('b.nii')]}
    """
    groups: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for path in paths:
        stem = _stem(path)
        match = _CHANNEL.match(stem)
        if match:
            groups[match["case"]].append((int(match["channel"]), path))
        else:
            groups[stem].append((0, path))
    for case, files in groups.items():
        _check_channel_numbers(case, sorted(files))
    return {case: [p for _, p in sorted(files)] for case, files in groups.items()}


def _check_channel_numbers(case: str, files: list[tuple[int, Path]]) -> None:
    """Channels of one case, sorted, must be exactly 0..C-1."""
    numbers = [channel for channel, _ in files]
    expected = list(range(len(numbers)))
    if numbers == expected:
        return
    first = files[0][1]
    ending = first.name[len(_stem(first)):]
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        raise DataError(f"{first}: channel {repeated[0]} of case {case} is given twice; "
                        "pass each channel file once")
    missing = next(n for n in range(max(numbers) + 1) if n not in numbers)
    raise DataError(
        f"{first.parent / f'{case}_{missing:04d}{ending}'}: channel file missing for case "
        f"{case} (found channels {numbers}); pass every channel {case}_0000..{case}_"
        f"{max(numbers):04d}{ending}"
    )


def _read_case(case: str, files: list[Path], in_channels: int) -> Volume:
    arrays, affine = [], None
    for path in files:
        array, file_affine, _ = read_nifti(path)
        if affine is not None and not np.allclose(affine, file_affine, atol=1e-3):
            raise DataError(
                f"{path}: affine differs from {files[0].name}; channels must share a grid"
            )
        affine = file_affine
        arrays.extend([array] if array.ndim == 3 else np.moveaxis(array, -1, 0))
    if len(arrays) != in_channels:
        raise DataError(
            f"{files[0]}: case {case} has {len(arrays)} channel(s) but the model takes "
            f"{in_channels}; pass all channel files (CASE_0000..CASE_{in_channels - 1:04d})"
        )
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"{files[0]}: channels of case {case} have different shapes {shapes}")
    image = np.stack(arrays).astype(np.float32)
    problem = image_problem(image)
    if problem:
        raise DataError(f"{files[0]}: {problem}")
    return Volume(image, None, affine, case, str(files[0]))


def _to_file_axes(array: np.ndarray, axis_order: list[int], leading: int = 0) -> np.ndarray:
    """Undo the record's ``axis_order`` on the last three axes (``leading`` axes kept)."""
    inverse = np.argsort(axis_order)
    return np.transpose(array, [*range(leading), *(leading + int(a) for a in inverse)])


def predict_files(
    checkpoint: str | Path,
    inputs: list[str | Path],
    out_dir: str | Path,
    *,
    probabilities: bool = False,
    points: bool = False,
    overwrite: bool = False,
    device: str = "auto",
) -> list[Path]:
    """Segment NIfTI files; writes ``CASE.nii.gz`` label maps (and optional maps) to out_dir.

    Each scan is brought to what the network was trained on by the checkpoint's preprocessing
    record (axis order, the dataset files' own preprocessing, the run's normalisation); a
    checkpoint without one is refused.

    Args:
        checkpoint: checkpoint file or run folder.
        inputs: NIfTI files; nnU-Net channel files of one case are grouped.
        out_dir: output folder (created).
        probabilities: also write ``CASE_probabilities.nii.gz`` (X, Y, Z, K) float32.
        points: also write ``CASE_points.nii.gz``, 1 where the renderer re-predicted.
        overwrite: replace existing outputs (default: refuse, naming the file).
    """
    torch_device = resolve_device(device)
    run = load_run(checkpoint, torch_device)
    if points and run.model.renderer is None:
        raise DataError(f"{run.path}: the renderer is off (model.renderer=false), so no voxel is "
                        "re-predicted; predict without --points")
    record = check_record(run.preprocessing, f"checkpoint {run.path}")
    groups = group_channel_files([Path(p) for p in inputs])
    out_dir = Path(out_dir)
    planned = {case: out_dir / f"{case}.nii.gz" for case in groups}
    if not overwrite:
        existing = [str(p) for p in planned.values() if p.exists()]
        if existing:
            raise DataError(f"{existing[0]}: already exists; pass --overwrite or another -o folder")
    written = []
    for case, files in groups.items():
        volume = _read_case(case, files, record["in_channels"])
        network_input = replace(volume, image=raw_to_network(volume.image, record))
        with torch.no_grad():
            prediction = predict_case(run.model, run.config, network_input, torch_device,
                                      probabilities=probabilities)
        order, reference = record["axis_order"], files[0]
        written.append(write_label_like(planned[case], _to_file_axes(prediction.rendered, order),
                                        reference))
        if probabilities:
            written.append(write_array_like(
                out_dir / f"{case}_probabilities.nii.gz",
                _to_file_axes(prediction.probabilities, order, leading=1), reference,
                channel_axis=0,
            ))
        if points:
            points_map = prediction.rendered_points.astype(np.uint8)
            written.append(write_label_like(out_dir / f"{case}_points.nii.gz",
                                            _to_file_axes(points_map, order), reference))
    return written
