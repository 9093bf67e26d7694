"""Dataset integrity check in the spirit of nnU-Net's ``verify_dataset_integrity``.

:func:`check_dataset` reads the whole folder once and lists EVERY problem it finds:
dataset.json fields, missing channel or label files, orphan labels, badly named files,
unreadable files, channel/image/label grids (shape, spacing, affine), label values not in
dataset.json, NaN or infinite voxels, and ``numTraining`` against the cases found. The test set
(``imagesTs``) is checked the same way; once ``labelsTs`` exists, every test case needs its
label map there. A case in both ``imagesTr`` and ``imagesTs`` is leakage, found by name and by
content (the same decoded voxels under another name, e.g. a copy re-saved as another dtype).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> [str(p) for p in check_dataset(Path(tempfile.mkdtemp()))]  # doctest: +ELLIPSIS
    ['dataset.json: not found; ...']
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from morse.errors import DataError

from .cases import CaseFiles, inspect_case, list_cases
from .dataset_json import DatasetSpec, parse_dataset_json
from .files import list_files, split_channel_file, strip_ending
from .validate import read_json
from .volume import display_path

__all__ = ["DatasetCheck", "Problem", "check_dataset", "format_problems", "inspect_dataset"]


@dataclass(frozen=True)
class Problem:
    """One problem: the file (relative to the dataset root when inside it) and what is wrong.

    >>> str(Problem("labelsTr/a.nii.gz", "file not found; add it"))
    'labelsTr/a.nii.gz: file not found; add it'
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def format_problems(problems: list[Problem]) -> str:
    """All problems, one per line (empty string when there are none)."""
    return "\n".join(str(p) for p in problems)


def _check_json(root: Path) -> tuple[DatasetSpec | None, list[Problem]]:
    fix = "not found; write dataset.json with channel_names, labels, file_ending and numTraining"
    try:
        data = read_json(root / "dataset.json", fix)
    except DataError as error:
        return None, [Problem("dataset.json", str(error).split(": ", 1)[1])]
    spec, texts = parse_dataset_json(data, root)
    return spec, [Problem("dataset.json", t) for t in texts]


def _naming_problems(root: Path, spec: DatasetSpec, subset: str) -> list[Problem]:
    """Files in images{subset} that are not named CASE_XXXX, or name an unknown channel."""
    folder = root / f"images{subset}"
    if spec.layout != "nnunet" or not folder.is_dir():
        return []
    problems = []
    for path in list_files(folder, endings=None):
        show = display_path(path, root)
        parsed = split_channel_file(path.name, spec.file_ending)
        if parsed is None:
            problems.append(
                Problem(
                    show,
                    f"name does not end in _XXXX{spec.file_ending} (channel suffix); "
                    f"rename it e.g. to CASE_0000{spec.file_ending}",
                )
            )
        elif parsed[1] >= spec.num_channels:
            problems.append(
                Problem(
                    show,
                    f"channel {parsed[1]} is not in dataset.json channel_names "
                    f"({spec.num_channels} channel(s)); add the channel or remove the file",
                )
            )
    return problems


def _orphan_labels(root: Path, spec: DatasetSpec, case_ids: set[str], subset: str) -> list[Problem]:
    folder = root / f"labels{subset}"
    if not folder.is_dir():
        if subset == "Ts":
            return []  # an unlabelled test set
        return [Problem("labelsTr", "folder not found; put one label map per training case")]
    problems = []
    for path in list_files(folder, spec.file_ending):
        cid = strip_ending(path.name, spec.file_ending)
        if cid not in case_ids:
            problems.append(
                Problem(
                    display_path(path, root),
                    f"label without an image in images{subset}; add the image or remove the "
                    "label",
                )
            )
    return problems


def _test_labels(root: Path, spec: DatasetSpec, cases: list[CaseFiles]) -> list[Problem]:
    """Give each imagesTs case its labelsTs file when that folder exists; a missing one is a
    problem (a test set is labelled as a whole or not at all)."""
    folder = root / "labelsTs"
    if not folder.is_dir():
        return []
    problems = []
    for index, case in enumerate(cases):
        expected = folder / f"{case.case_id}{spec.file_ending}"
        if case.label is None and expected.is_file():
            cases[index] = replace(case, label=expected)
        elif case.label is None:
            problems.append(Problem(
                display_path(expected, root),
                "file not found; labelsTs exists, so every imagesTs case needs its label map "
                "(add it, or move labelsTs away for an unlabelled test set)",
            ))
    return problems


@dataclass(frozen=True)
class SubsetCheck:
    """The problems of one subset (``"Tr"`` or ``"Ts"``), its cases and how many have a label."""

    problems: list[Problem]
    cases: int = 0
    labelled: int = 0
    files: dict[str, Path] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)


def _voxel_digest(image: np.ndarray) -> str | None:
    """A hash of a case's decoded voxels (C, *spatial) as float32 and their shape: equal for a
    copy whatever its file name, compression or stored dtype. None for an image of one value
    throughout: blank scans are alike without being the same case."""
    flat = image.reshape(-1)
    if flat.size == 0 or np.all(flat == flat[0]):
        return None
    digest = hashlib.sha256(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _check_subset(root: Path, spec: DatasetSpec, subset: str) -> SubsetCheck:
    """Problems of every case of one subset, and the number of cases found."""
    try:
        cases = list_cases(root, subset, spec)
    except DataError as exc:
        if subset == "Ts" and not (root / "imagesTs").exists():
            return SubsetCheck([])  # a test set is optional
        text = str(exc)
        path, _, message = text.partition(": ")
        return SubsetCheck([Problem(display_path(path, root), message)])
    problems = _naming_problems(root, spec, subset)
    if subset == "Ts":
        problems.extend(_test_labels(root, spec, cases))
    digests = {}
    for case in cases:
        volume, found = inspect_case(case, spec)
        problems.extend(Problem(case.show(path), text) for path, text in found)
        digest = None if volume is None else _voxel_digest(volume.image)
        if digest is not None:
            digests[case.case_id] = digest
    problems.extend(_orphan_labels(root, spec, {c.case_id for c in cases}, subset))
    if subset == "Tr" and spec.num_training is not None and spec.num_training != len(cases):
        problems.append(
            Problem(
                "dataset.json",
                f"numTraining is {spec.num_training} but imagesTr holds {len(cases)} "
                "case(s); fix numTraining",
            )
        )
    labelled = sum(case.label is not None and case.label.is_file() for case in cases)
    return SubsetCheck(problems, len(cases), labelled, {c.case_id: c.images[0] for c in cases},
                       digests)


def _leakage(root: Path, train: SubsetCheck, test: SubsetCheck) -> list[Problem]:
    """Held-out cases that are also training cases, by name or by the same voxels: their
    scores would measure memory, not generalisation. One problem per held-out case."""
    fix = ("remove the case from imagesTs (and labelsTs) or from imagesTr (and labelsTr), so "
           "that held-out scores measure cases the model never saw")
    same = {digest: case for case, digest in train.digests.items()}
    problems = []
    for case, path in test.files.items():
        digest = test.digests.get(case)
        if case in train.files:
            other = display_path(train.files[case], root)
            voxels = " with the same voxels" if digest and digest == train.digests.get(case) \
                else ""
            problems.append(Problem(display_path(path, root),
                                    f"case {case} is also a training case ({other}){voxels}; "
                                    f"{fix} (or rename it if it is another scan)"))
        elif digest in same:
            other = display_path(train.files[same[digest]], root)
            problems.append(Problem(display_path(path, root),
                                    f"same voxels as training case {same[digest]} ({other}) "
                                    f"under another name; {fix}"))
    return problems


@dataclass(frozen=True)
class DatasetCheck:
    """Everything :func:`inspect_dataset` found.

    >>> DatasetCheck(Path("Dataset001_X"), [], 5, 2, 2).summary()
    'Dataset001_X: 5 training cases, 2 test cases (2 labelled), 0 problems'
    """

    root: Path
    problems: list[Problem]
    training: int = 0
    test: int = 0
    test_labelled: int = 0

    def summary(self) -> str:
        """One line: the folder, its cases and the number of problems."""
        return (f"{self.root.name}: {self.training} training cases, {self.test} test cases "
                f"({self.test_labelled} labelled), {len(self.problems)} problems")


def inspect_dataset(root: str | Path) -> DatasetCheck:
    """Check an nnU-Net v2 or Decathlon dataset folder: every problem and the cases found.

    Args:
        root: dataset folder holding ``dataset.json``, ``imagesTr``, ``labelsTr`` and
            optionally ``imagesTs`` (with ``labelsTs``: a label map for every test case).

    Problems in ``dataset.json`` that prevent reading the cases stop the check there.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder; give the folder holding dataset.json")
    spec, problems = _check_json(root)
    if spec is None:
        return DatasetCheck(root, problems)
    train, test = (_check_subset(root, spec, subset) for subset in ("Tr", "Ts"))
    problems += [*train.problems, *test.problems, *_leakage(root, train, test)]
    return DatasetCheck(root, problems, train.cases, test.cases, test.labelled)


def check_dataset(root: str | Path) -> list[Problem]:
    """Every problem of a dataset folder (empty when it is fine); see :func:`inspect_dataset`."""
    return inspect_dataset(root).problems
