"""The nnunet and msd data formats: nnU-Net v2 and Medical Segmentation Decathlon folders,
split by case (seeded, or ``data.split_file``) after the dataset check.

nnU-Net v2 layout::

    Dataset001_X/
      dataset.json   {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
                      "file_ending": ".nii.gz", "numTraining": 2}
      imagesTr/case_000_0000.nii.gz   (one file per channel: _0000, _0001, ...)
      labelsTr/case_000.nii.gz
      imagesTs/case_100_0000.nii.gz

Decathlon layout (also nnU-Net v1)::

    Task02_Heart/
      dataset.json   {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "left atrium"},
                      "training": [{"image": "./imagesTr/la_003.nii.gz",
                                    "label": "./labelsTr/la_003.nii.gz"}],
                      "test": ["./imagesTs/la_001.nii.gz"], "numTraining": 1}
      imagesTr/la_003.nii.gz   (one file per case; 4D with channels LAST when multi-channel)

The cases are listed and read by :mod:`morse.data.cases`; ``dataset.json`` by
:mod:`morse.data.dataset_json`; the check by :mod:`morse.data.check`.
"""

from __future__ import annotations

from collections.abc import Sequence

from morse.config import DataConfig
from morse.errors import DataError

from .cases import list_cases, load_case
from .check import check_dataset, format_problems
from .dataset_json import read_dataset_json
from .formats import DataFormat, Loaded, TrainVolumes, dataset_root, register_format
from .intensity import make_record, resolve_intensity
from .split import load_split, split_cases

__all__ = ["NNUNET"]


def _load(cfg: DataConfig, wanted: Sequence[str], check: bool) -> Loaded:
    root = dataset_root(cfg)
    if check:
        problems = check_dataset(root)
        if problems:
            raise DataError(
                f"{root}: {len(problems)} problem(s) found by the dataset check "
                f"(run `morse check {root}`):\n{format_problems(problems)}"
            )
    spec = read_dataset_json(root)
    cases = {case.case_id: case for case in list_cases(root, "Tr")}
    if not cases:
        raise DataError(f"{root}/imagesTr: no training case found; check dataset.json file_ending")
    if cfg.split_file:
        split = load_split(cfg.split_file, known_cases=cases)
    else:
        split = split_cases(sorted(cases), cfg.split_fractions, cfg.seed)
    subsets = split.as_dict()
    return Loaded({name: [load_case(cases[c], spec) for c in subsets[name]] for name in wanted},
                  split)


def _record(cfg: DataConfig, train: TrainVolumes) -> dict:
    channels = read_dataset_json(dataset_root(cfg)).channel_names
    names = [channels[str(c)] for c in range(len(channels))]
    return make_record(resolve_intensity(cfg.normalize, names, train))


NNUNET = DataFormat(_load, lambda cfg: read_dataset_json(dataset_root(cfg)).class_names, _record)
"""The format of both layouts (the reader tells them apart by ``dataset.json``)."""

register_format("nnunet", NNUNET)
register_format("msd", NNUNET)
