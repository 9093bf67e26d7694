"""``dataset.json`` of nnU-Net v2 and Medical Segmentation Decathlon folders: parsed, checked.

nnU-Net v2 writes ``{"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
"file_ending": ".nii.gz", "numTraining": 2}``; the Decathlon writes ``{"modality": {"0": "MRI"},
"labels": {"0": "background", "1": "left atrium"}, "training": [...], "test": [...]}``.

>>> spec, problems = parse_dataset_json(
...     {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"}}, "Task03_Liver")
>>> spec.layout, spec.class_names, spec.channel_names, problems
('msd', ['background', 'liver'], {'0': 'CT'}, [])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from morse.errors import DataError

from .files import NIFTI_ENDINGS
from .validate import read_json

__all__ = ["DatasetSpec", "parse_dataset_json", "read_dataset_json"]


@dataclass
class DatasetSpec:
    """What ``dataset.json`` says.

    Attributes:
        root: dataset folder.
        channel_names: channel index as string -> name, e.g. ``{"0": "T2", "1": "ADC"}``.
        labels: class name -> integer value (background 0).
        file_ending: e.g. ``".nii.gz"``.
        num_training: ``numTraining`` or None when absent.
        layout: ``"nnunet"`` (v2, one file per channel) or ``"msd"`` (Decathlon, one file).
        training: Decathlon ``training`` entries ``{"image": ..., "label": ...}`` (may be empty).
        test: Decathlon ``test`` image paths (may be empty).
        name: ``name`` field or the folder name.
    """

    root: Path
    channel_names: dict[str, str]
    labels: dict[str, int]
    file_ending: str = ".nii.gz"
    num_training: int | None = None
    layout: str = "nnunet"
    training: list[dict[str, str]] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    name: str = ""

    @property
    def class_names(self) -> list[str]:
        """Class names ordered by label value (index i names value ``sorted(values)[i]``)."""
        return [name for name, _ in sorted(self.labels.items(), key=lambda kv: kv[1])]

    @property
    def num_channels(self) -> int:
        """Number of input channels."""
        return len(self.channel_names)

    @property
    def label_values(self) -> set[int]:
        """The allowed label values."""
        return set(self.labels.values())


def _int_like(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_labels_nnunet(labels: dict, problems: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, list | tuple):
            problems.append(
                f'labels["{name}"] is a region {value}; region-based labels are not supported, '
                "list one integer per class"
            )
        elif _int_like(value) or (isinstance(value, str) and value.isdigit()):
            out[str(name)] = int(value)
        else:
            problems.append(f'labels["{name}"] = {value!r} is not an integer; give class values')
    return out


def _parse_labels_msd(labels: dict, problems: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value, name in labels.items():
        if not str(value).isdigit():
            problems.append(f'labels key "{value}" is not an integer value; use {{"1": "name"}}')
            continue
        out[str(name)] = int(value)
    return out


def _check_labels(labels: dict[str, int], problems: list[str]) -> None:
    values = list(labels.values())
    if len(set(values)) != len(values):
        problems.append(f"labels {labels} give the same value to two classes; make them unique")
    if labels and 0 not in values:
        problems.append("labels has no background class with value 0; add it")


def parse_dataset_json(data: Any, root: str | Path) -> tuple[DatasetSpec | None, list[str]]:
    """Parse the content of ``dataset.json``; return the spec (or None) and ALL problems found.

    Problems are strings without the file name (``"missing field file_ending; ..."``).
    """
    root = Path(root)
    problems: list[str] = []
    if not isinstance(data, dict):
        return None, ['is not a JSON object; write {"channel_names": ..., "labels": ...}']
    if "channel_names" in data:
        layout, channels = "nnunet", data["channel_names"]
    elif "modality" in data:
        layout, channels = "msd", data["modality"]
    else:
        layout, channels = "nnunet", None
        problems.append(
            "missing field channel_names (nnU-Net v2) or modality (Decathlon); "
            'add e.g. "channel_names": {"0": "CT"}'
        )
    if channels is not None:
        keys = sorted(str(k) for k in channels) if isinstance(channels, dict) else None
        if not keys or keys != [str(i) for i in range(len(keys))]:
            problems.append(
                f"channel names {channels!r} must map 0, 1, ... to names; "
                'write e.g. {"0": "T2", "1": "ADC"}'
            )
            channels = None
    raw_labels = data.get("labels")
    labels: dict[str, int] = {}
    if not isinstance(raw_labels, dict) or not raw_labels:
        problems.append('missing or empty field labels; add e.g. {"background": 0, "organ": 1}')
    else:
        msd_style = all(str(k).isdigit() for k in raw_labels)
        labels = (
            _parse_labels_msd(raw_labels, problems)
            if msd_style
            else _parse_labels_nnunet(raw_labels, problems)
        )
        _check_labels(labels, problems)
    file_ending = data.get("file_ending", ".nii.gz" if layout == "msd" else None)
    if file_ending is None:
        problems.append('missing field file_ending; add "file_ending": ".nii.gz"')
    elif file_ending not in NIFTI_ENDINGS:
        problems.append(
            f"file_ending {file_ending!r} is not supported; convert the images to .nii.gz"
        )
    num_training = data.get("numTraining")
    if num_training is None and layout == "nnunet":
        problems.append("missing field numTraining; add the number of training cases")
    elif num_training is not None and not _int_like(num_training):
        problems.append(f"numTraining {num_training!r} is not an integer; fix it")
        num_training = None
    training = data.get("training", []) if layout == "msd" else []
    test = data.get("test", []) if layout == "msd" else []
    if not isinstance(training, list) or not all(
        isinstance(t, dict) and "image" in t for t in training
    ):
        problems.append('training must be a list of {"image": ..., "label": ...}; fix it')
        training = []
    if not isinstance(test, list):
        problems.append("test must be a list of image paths; fix it")
        test = []
    test = [t["image"] if isinstance(t, dict) else t for t in test]
    if channels is None or not labels or file_ending not in NIFTI_ENDINGS:
        return None, problems
    spec = DatasetSpec(
        root=root,
        channel_names={str(k): str(v) for k, v in channels.items()},
        labels=labels,
        file_ending=file_ending,
        num_training=num_training,
        layout=layout,
        training=list(training),
        test=[str(t) for t in test],
        name=str(data.get("name", root.name)),
    )
    return spec, problems


def read_dataset_json(root: str | Path) -> DatasetSpec:
    """Read and validate ``root/dataset.json`` (nnU-Net v2 or Decathlon flavour).

    Raises:
        DataError: the file is missing, not JSON, or lacks a needed field (all listed).
    """
    root = Path(root)
    path = root / "dataset.json"
    data = read_json(path, "not found; a dataset folder needs dataset.json with "
                     "channel_names, labels, file_ending and numTraining")
    spec, problems = parse_dataset_json(data, root)
    if problems or spec is None:
        raise DataError(f"{path}: " + "; ".join(problems))
    return spec
