"""The cases of an nnU-Net v2 or Decathlon folder (layouts in :mod:`morse.data.nnunet`):
listed from their files, then read and checked one by one.

A case's image is (C, *spatial): one file per channel (nnU-Net v2, ``CASE_0000``...) or one
file, 4D with channels last (Decathlon).

Example:
    >>> import json, tempfile, numpy as np, nibabel as nib
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "imagesTr").mkdir(); (root / "labelsTr").mkdir()
    >>> spec = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
    ...         "file_ending": ".nii.gz", "numTraining": 1}
    >>> _ = (root / "dataset.json").write_text(json.dumps(spec))
    >>> nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.float32), np.eye(4)),
    ...          root / "imagesTr" / "a_0000.nii.gz")
    >>> nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.uint8), np.eye(4)),
    ...          root / "labelsTr" / "a.nii.gz")
    >>> spec = read_dataset_json(root)
    >>> spec.class_names
    ['background', 'liver']
    >>> vol = load_case(list_cases(root)[0], spec)
    >>> vol.case_id, vol.image.shape, vol.label.shape
    ('a', (1, 4, 4, 3), (4, 4, 3))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from morse.errors import DataError

from .dataset_json import DatasetSpec, read_dataset_json
from .files import list_files, split_channel_file, strip_ending
from .nifti import (
    CHANNEL_GRID_FIX,
    grid_problems,
    squeeze_last,
    try_read_label_map,
    try_read_nifti,
)
from .validate import image_problem, label_problem
from .volume import Volume, display_path

__all__ = [
    "CaseFiles",
    "list_cases",
    "load_case",
    "inspect_case",
]


@dataclass
class CaseFiles:
    """The files of one case.

    Attributes:
        case_id: case identifier (file name without channel suffix and ending).
        images: nnU-Net: one expected path per channel (some may be missing on disk);
            Decathlon: a single file, 4D with channels last when multi-channel.
        label: label path (expected, may be missing on disk) or None for unlabelled cases.
        root: dataset folder, used to print short paths.
    """

    case_id: str
    images: list[Path]
    label: Path | None
    root: Path | None = None

    def show(self, path: Path) -> str:
        """Path relative to the dataset root, for messages."""
        return display_path(path, self.root)


# --------------------------------------------------------------------------- case listing


def _image_folder(root: Path, subset: str) -> Path:
    if subset not in ("Tr", "Ts"):
        raise ValueError(f"subset must be 'Tr' or 'Ts', got {subset!r}")
    folder = root / f"images{subset}"
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; put the images{subset} cases there")
    return folder


def _list_nnunet(spec: DatasetSpec, subset: str) -> list[CaseFiles]:
    root, ending = spec.root, spec.file_ending
    folder = _image_folder(root, subset)
    case_ids = sorted(
        {
            parsed[0]
            for p in list_files(folder, ending)
            if (parsed := split_channel_file(p.name, ending)) is not None
        }
    )
    if not case_ids:
        raise DataError(
            f"{folder}: no case files named CASE_0000{ending}; put one file per channel "
            "there (nnU-Net v2 naming)"
        )
    cases = []
    for cid in case_ids:
        images = [folder / f"{cid}_{c:04d}{ending}" for c in range(spec.num_channels)]
        label: Path | None = root / f"labels{subset}" / f"{cid}{ending}"
        if subset == "Ts" and not label.is_file():
            label = None
        cases.append(CaseFiles(cid, images, label, root))
    return cases


def _list_msd(spec: DatasetSpec, subset: str) -> list[CaseFiles]:
    root = spec.root
    folder = _image_folder(root, subset)
    files = list_files(folder, spec.file_ending)
    if not files:
        raise DataError(f"{folder}: no {spec.file_ending} images; put the cases there")
    entries: list[tuple[Path, Path | None]]
    if subset == "Tr" and spec.training:
        entries = [
            (root / t["image"], root / t["label"] if t.get("label") else None)
            for t in spec.training
        ]
    elif subset == "Ts" and spec.test:
        entries = [(root / t, None) for t in spec.test]
    else:
        entries = [(p, root / f"labels{subset}" / p.name) for p in files]
    cases = []
    for image, label in entries:
        if subset == "Ts" and label is not None and not label.is_file():
            label = None
        cases.append(CaseFiles(strip_ending(image.name) or image.name, [image], label, root))
    return sorted(cases, key=lambda c: c.case_id)


def list_cases(
    root: str | Path, subset: str = "Tr", spec: DatasetSpec | None = None
) -> list[CaseFiles]:
    """List the cases of ``images{subset}`` (``subset`` is ``"Tr"`` or ``"Ts"``).

    Cases are found from their files; missing channel or label files are listed at their
    expected paths so that :func:`load_case` or :func:`morse.data.check.check_dataset` can
    report them.

    Raises:
        DataError: the folder is missing or holds no case.
    """
    spec = spec or read_dataset_json(root)
    spec = DatasetSpec(**{**spec.__dict__, "root": Path(root)})
    if spec.layout == "msd":
        return _list_msd(spec, subset)
    return _list_nnunet(spec, subset)


# --------------------------------------------------------------------------- loading


def _read_channels(
    case: CaseFiles, spec: DatasetSpec, problems: list[tuple[Path, str]]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Image (C, *spatial) and affine of the case, or (None, None) when unusable."""
    arrays, first = [], None
    for channel, path in enumerate(case.images):
        result, problem = try_read_nifti(path)
        if result is None:
            problems.append((path, problem))
            continue
        array, affine, _ = result
        if len(case.images) == 1 and array.ndim == 4 and array.shape[-1] > 1:
            channels = [array[..., i] for i in range(array.shape[-1])]
        else:
            channels = [squeeze_last(array)]
        if len(case.images) == 1 and len(channels) != spec.num_channels:
            problems.append(
                (
                    path,
                    f"has {len(channels)} channel(s) along its last axis but dataset.json lists "
                    f"{spec.num_channels}; fix the image or the channel list",
                )
            )
            continue
        if first is None:
            first = (path, channels[0].shape, affine, channel)
        else:
            other = f"channel {first[3]} {case.show(first[0])}"
            grid = grid_problems(channels[0].shape, affine, first[1], first[2], other,
                                 fix=CHANNEL_GRID_FIX)
            if grid:
                problems.extend((path, g) for g in grid)
                continue
        bad = image_problem(np.stack(channels))
        if bad:
            problems.append((path, bad))
        arrays.extend(channels)
    if first is None or len(arrays) != spec.num_channels:
        return None, None
    return np.stack([a.astype(np.float32, copy=False) for a in arrays]), first[2]


def _label_value_problem(label: np.ndarray, spec: DatasetSpec) -> str | None:
    listed = ", ".join(f"{n}={v}" for n, v in sorted(spec.labels.items(), key=lambda x: x[1]))
    return label_problem(
        label, spec.label_values, f"not listed in dataset.json labels ({listed})",
        "fix the label map or add the classes to dataset.json",
    )


def _read_label(
    case: CaseFiles,
    spec: DatasetSpec,
    image_shape: tuple[int, ...] | None,
    image_affine: np.ndarray | None,
    problems: list[tuple[Path, str]],
) -> np.ndarray | None:
    if case.label is None:
        return None
    label_map, problem = try_read_label_map(case.label)
    if label_map is None:
        problems.append((case.label, problem))
        return None
    label = label_map.label
    ok = True
    if image_shape is not None and image_affine is not None:
        other = f"its label {case.show(case.label)}"
        grid = grid_problems(image_shape, image_affine, label.shape, label_map.affine, other)
        problems.extend((case.images[0], g) for g in grid)
        ok = not grid
    value_problem = _label_value_problem(label, spec)
    if value_problem:
        problems.append((case.label, value_problem))
        ok = False
    return label if ok else None


def inspect_case(
    case: CaseFiles, spec: DatasetSpec
) -> tuple[Volume | None, list[tuple[Path, str]]]:
    """Read a case and collect ALL its problems.

    Returns:
        ``(volume, problems)``: the Volume (None when any problem was found) and a list of
        ``(path, problem text)``.
    """
    problems: list[tuple[Path, str]] = []
    image, affine = _read_channels(case, spec, problems)
    spatial = None if image is None else image.shape[1:]
    label = _read_label(case, spec, spatial, affine, problems)
    if problems or image is None:
        return None, problems
    return Volume(image, label, affine, case.case_id, str(case.images[0])), problems


def load_case(case: CaseFiles, spec: DatasetSpec) -> Volume:
    """Load one case as a :class:`Volume` (image (C, *spatial) float32, label int64 or None).

    Checks that the files exist and are readable, the channels share one grid, image and
    label share shape and affine (within 1e-3 mm), the label values are listed in
    ``dataset.json`` and the image has no NaN/inf voxels.

    Raises:
        DataError: the first problem found (file, problem, fix).
    """
    volume, problems = inspect_case(case, spec)
    if problems:
        path, text = problems[0]
        more = (
            f" (and {len(problems) - 1} more problem(s); run check_dataset)" if problems[1:] else ""
        )
        raise DataError(f"{case.show(path)}: {text}{more}")
    assert volume is not None
    return volume
