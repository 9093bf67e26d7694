"""NIfTI file names: endings, case names, nnU-Net channel files and folder listings.

The one place that knows how a file name becomes a case: ``case7.nii.gz`` is case ``case7``;
``case7_0001.nii.gz`` is channel 1 of case ``case7`` (nnU-Net v2's four-digit suffix).

>>> strip_ending("case7.nii.gz"), strip_ending("notes.txt")
('case7', None)
>>> split_channel_file("case_001_0001.nii.gz")
('case_001', 1)
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from morse.errors import DataError

__all__ = [
    "NIFTI_ENDINGS",
    "strip_ending",
    "split_channel_file",
    "group_channel_files",
    "list_files",
]

NIFTI_ENDINGS = (".nii.gz", ".nii")
"""The file endings read as NIfTI, longest first."""

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def strip_ending(name: str, endings: str | tuple[str, ...] = NIFTI_ENDINGS) -> str | None:
    """``name`` without its ending (the first of ``endings`` it has), or None without one."""
    for ending in (endings,) if isinstance(endings, str) else endings:
        if name.endswith(ending):
            return name[: -len(ending)]
    return None


def split_channel_file(
    name: str, endings: str | tuple[str, ...] = NIFTI_ENDINGS
) -> tuple[str, int] | None:
    """``("case_001", 1)`` for ``"case_001_0001.nii.gz"``; None when the name lacks one of
    ``endings`` or the ``_XXXX`` channel suffix.

    >>> split_channel_file("case_001.nii.gz", ".nii.gz") is None
    True
    """
    stem = strip_ending(name, endings)
    match = None if stem is None else _CHANNEL.match(stem)
    if match is None:
        return None
    return match["case"], int(match["channel"])


def group_channel_files(
    paths: list[Path], in_channels: int | None = None
) -> dict[str, list[Path]]:
    """Group nnU-Net channel files (``CASE_0000.nii.gz``, ``CASE_0001``...) by case.

    Files without a channel suffix are single-channel (or 4D multi-channel) cases. For a
    model of one input channel (``in_channels=1``), so are files whose would-be case has no
    ``_0000``: ``visit_2021.nii.gz`` is case ``visit_2021``. The channels of a case must run
    0..C-1: a gap or a repeat raises DataError naming the file.

    >>> group_channel_files([Path("a_0001.nii.gz"), Path("a_0000.nii.gz"), Path("b.nii")])
    {'a': [PosixPath('a_0000.nii.gz'), PosixPath('a_0001.nii.gz')], 'b': [PosixPath('b.nii')]}
    >>> group_channel_files([Path("visit_2021.nii.gz")], in_channels=1)
    {'visit_2021': [PosixPath('visit_2021.nii.gz')]}
    """
    groups: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for path in paths:
        stem = _stem(path)
        parsed = split_channel_file(path.name)
        if parsed:
            groups[parsed[0]].append((parsed[1], path))
        else:
            groups[stem].append((0, path))
    # one channel and no _0000 file: the digits are part of the name, not a channel number
    lone = [c for c, files in groups.items() if all(n > 0 for n, _ in files)]
    for case in lone if in_channels == 1 else []:
        for _, path in groups.pop(case):
            groups[_stem(path)].append((0, path))
    for case, files in groups.items():
        _check_channel_numbers(case, sorted(files))
    return {case: [p for _, p in sorted(files)] for case, files in groups.items()}


def _stem(path: Path) -> str:
    stem = strip_ending(path.name)
    if stem is None:
        raise DataError(f"{path}: not a NIfTI file (.nii or .nii.gz)")
    return stem


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


def list_files(folder: Path, endings: str | tuple[str, ...] | None = NIFTI_ENDINGS) -> list[Path]:
    """The files of ``folder`` with one of ``endings`` (None: any), sorted by name; hidden
    files (``.name``) and sub-folders left out."""
    return sorted(
        path for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".")
        and (endings is None or strip_ending(path.name, endings) is not None)
    )
