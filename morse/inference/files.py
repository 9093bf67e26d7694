"""Segment new NIfTI scans: label maps written on each input's own grid, header kept."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from morse.data.datasets import normalize_intensity
from morse.data.nifti import read_nifti, write_array_like, write_label_like
from morse.data.volume import DataError, Volume
from morse.device import resolve_device
from morse.inference.trained import load_trained, predict_case

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

    Files without a channel suffix are single-channel (or 4D multi-channel) cases.

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
    return {case: [p for _, p in sorted(files)] for case, files in groups.items()}


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
    return Volume(np.stack(arrays).astype(np.float32), None, affine, case, str(files[0]))


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

    Args:
        checkpoint: checkpoint file or run folder.
        inputs: NIfTI files; nnU-Net channel files of one case are grouped.
        out_dir: output folder (created).
        probabilities: also write ``CASE_probabilities.nii.gz`` (X, Y, Z, K) float32.
        points: also write ``CASE_points.nii.gz``, 1 where the renderer re-predicted.
        overwrite: replace existing outputs (default: refuse, naming the file).
    """
    torch_device = resolve_device(device)
    model, cfg, _ = load_trained(checkpoint, torch_device)
    in_channels = model.backbone.in_channels if hasattr(model.backbone, "in_channels") else 1
    groups = group_channel_files([Path(p) for p in inputs])
    out_dir = Path(out_dir)
    planned = {case: out_dir / f"{case}.nii.gz" for case in groups}
    if not overwrite:
        existing = [str(p) for p in planned.values() if p.exists()]
        if existing:
            raise DataError(f"{existing[0]}: already exists; pass --overwrite or another -o folder")
    written = []
    for case, files in groups.items():
        volume = _read_case(case, files, in_channels)
        volume.image = normalize_intensity(volume.image, cfg.data.normalize)
        with torch.no_grad():
            prediction = predict_case(model, cfg, volume, torch_device,
                                      probabilities=probabilities)
        reference = files[0]
        written.append(write_label_like(planned[case], prediction.rendered, reference))
        if probabilities:
            written.append(write_array_like(out_dir / f"{case}_probabilities.nii.gz",
                                            prediction.probabilities, reference, channel_axis=0))
        if points:
            written.append(write_label_like(out_dir / f"{case}_points.nii.gz",
                                            prediction.rendered_points.astype(np.uint8), reference))
    return written
