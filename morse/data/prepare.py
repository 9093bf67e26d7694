"""From a data config to training samples and evaluation volumes, for every supported format.

=========== ==================================== ====================== ======================
format      training                             validation             test
=========== ==================================== ====================== ======================
nnunet/msd  split by case (seeded, or split_file) split by case          split by case
synapse     train_npz slices of train.txt cases  held-out train cases   test_vol_h5 volumes
acdc        train_slices.list                    val.list volumes       test.list volumes
atlas-demo  left hemisphere (Colin27 + AAL)      left, mid-axial slab   right hemisphere
=========== ==================================== ====================== ======================
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from morse.config import DataConfig
from morse.data import (
    ACDC_CLASSES,
    ATLAS_CLASSES,
    SYNAPSE_CLASSES,
    DataError,
    PatchDataset,
    SliceDataset,
    Volume,
    check_dataset,
    foreground_slice_range,
    format_problems,
    list_cases,
    load_acdc_slices,
    load_acdc_volumes,
    load_atlas_demo,
    load_case,
    load_split,
    load_synapse_slices,
    load_synapse_volumes,
    normalize_volume,
    read_dataset_json,
    read_synapse_list,
    split_cases,
)
from morse.data.synapse import synapse_case_of

__all__ = ["PreparedData", "prepare_data", "load_eval_volumes", "FORMATS"]

FORMATS = ("nnunet", "msd", "synapse", "acdc", "atlas-demo")


@dataclass
class PreparedData:
    """What training needs.

    Attributes:
        train: a Dataset of ``{"image": (C, *S), "label": (1, *S)}`` samples.
        val: labelled validation volumes (C, *S), normalised.
        class_names: K names, background first.
        in_channels: C.
    """

    train: Dataset
    val: list[Volume]
    class_names: list[str]
    in_channels: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def prepare_data(cfg: DataConfig, check: bool = True) -> PreparedData:
    """Load the training samples and validation volumes a data config describes."""
    subsets, class_names = _load_subsets(cfg, ("train", "val"), check)
    train_volumes = subsets["train"]
    if not train_volumes:
        raise DataError(f"{cfg.root}: the training subset is empty; check the split")
    return PreparedData(
        train=_training_dataset(cfg, train_volumes),
        val=subsets["val"],
        class_names=class_names,
        in_channels=train_volumes[0].num_channels,
    )


def load_eval_volumes(cfg: DataConfig, subset: str = "test") -> list[Volume]:
    """The labelled, normalised volumes of ``subset`` ("val" or "test")."""
    if subset not in ("val", "test"):
        raise ValueError(f"subset must be 'val' or 'test', got {subset!r}")
    return _load_subsets(cfg, (subset,), check=False)[0][subset]


def _training_dataset(cfg: DataConfig, volumes: list[Volume]) -> Dataset:
    if cfg.spatial_dims == 2:
        _check_slice_sizes(cfg, volumes)
        return SliceDataset(
            volumes, slice_size=cfg.slice_size, augment=True, seed=cfg.seed,
            foreground_only=cfg.foreground_slices_only, empty_fraction=0.1,
        )
    return PatchDataset(
        volumes, cfg.patch_size, cfg.samples_per_volume, seed=cfg.seed, augment=True
    )


def _check_slice_sizes(cfg: DataConfig, volumes: list[Volume]) -> None:
    if cfg.slice_size is not None:
        return
    for volume in volumes:
        size = volume.spatial_shape[:2]
        if any(s % 32 for s in size):
            raise DataError(
                f"{volume.source}: slices are {size[0]} x {size[1]}, not multiples of 32 as the "
                "backbones need; set data.slice_size, e.g. "
                f"data.slice_size=[{-(-size[0] // 32) * 32},{-(-size[1] // 32) * 32}]"
            )


def _load_subsets(
    cfg: DataConfig, wanted: Sequence[str], check: bool
) -> tuple[dict[str, list[Volume]], list[str]]:
    if cfg.format not in FORMATS:
        raise DataError(f"data.format {cfg.format!r} is unknown; choose one of {FORMATS}")
    loader = {
        "nnunet": _nnunet, "msd": _nnunet, "synapse": _synapse, "acdc": _acdc,
        "atlas-demo": _atlas,
    }[cfg.format]
    subsets, class_names = loader(cfg, wanted, check)
    normalised = {
        name: [normalize_volume(v, cfg.normalize) for v in subsets.get(name, [])]
        for name in wanted
    }
    return normalised, class_names


def _root(cfg: DataConfig) -> Path:
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found; set data.root to your dataset folder")
    return root


def _case_split(cfg: DataConfig, case_ids: list[str]) -> dict[str, list[str]]:
    if cfg.split_file:
        split = load_split(cfg.split_file, known_cases=case_ids)
    else:
        split = split_cases(case_ids, cfg.split_fractions, cfg.seed)
    return {"train": split.train, "val": split.val, "test": split.test}


def _nnunet(cfg: DataConfig, wanted: Sequence[str], check: bool):
    root = _root(cfg)
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
    split = _case_split(cfg, sorted(cases))
    subsets = {name: [load_case(cases[c], spec) for c in split[name]] for name in wanted}
    return subsets, list(spec.class_names)


def _synapse(cfg: DataConfig, wanted: Sequence[str], check: bool):
    root = _root(cfg)
    subsets: dict[str, list[Volume]] = {}
    if "train" in wanted or "val" in wanted:
        by_case: dict[str, list[str]] = defaultdict(list)
        for name in read_synapse_list(root, "train"):
            by_case[synapse_case_of(name)].append(name)
        fractions = [1 - cfg.split_fractions[1], cfg.split_fractions[1], 0.0]
        split = split_cases(sorted(by_case), fractions, cfg.seed)
        if "train" in wanted:
            names = [n for case in split.train for n in by_case[case]]
            subsets["train"] = load_synapse_slices(root, names)
        if "val" in wanted:
            subsets["val"] = [
                _stack_slices(load_synapse_slices(root, sorted(by_case[c])), c)
                for c in split.val
            ]
    if "test" in wanted:
        subsets["test"] = load_synapse_volumes(root)
    return subsets, list(SYNAPSE_CLASSES)


def _stack_slices(slices: list[Volume], case_id: str) -> Volume:
    """Slices (C, H, W, 1) of one case, in name order, as a volume (C, H, W, D)."""
    image = np.concatenate([s.image for s in slices], axis=-1)
    label = np.concatenate([s.label for s in slices], axis=-1)
    return Volume(image, label, slices[0].affine, case_id, slices[0].source)


def _acdc(cfg: DataConfig, wanted: Sequence[str], check: bool):
    root = _root(cfg)
    loaders = {
        "train": lambda: load_acdc_slices(root),
        "val": lambda: load_acdc_volumes(root, "val"),
        "test": lambda: load_acdc_volumes(root, "test"),
    }
    return {name: loaders[name]() for name in wanted}, list(ACDC_CLASSES)


def atlas_demo_split(volume: Volume, val_fraction: float = 0.1, gap: int = 2) -> dict:
    """The demo's split of one brain: train on the left hemisphere, test on the right one.

    The right hemisphere (past the midline, x > 0 in world coordinates, ``gap`` voxels away) is
    the test set: its voxels are never seen in training, yet every class appears in it, mirrored
    from the left (training flips the slices). Validation is an axial slab of the left
    hemisphere at 45% of the brain's height, where every class appears too; training takes the
    rest of the left hemisphere, ``gap`` slices away from it.

    Returns:
        ``{"train": [Volume, Volume], "val": [Volume], "test": [Volume]}``.
    """
    to_voxel = np.linalg.inv(volume.affine)
    midline = int(round((to_voxel @ np.array([0.0, 0.0, 0.0, 1.0]))[0]))
    x_start, x_stop = foreground_slice_range(volume.label, axis=0)
    left = volume.slab(x_start, midline - gap, axis=0)
    right = volume.slab(midline + gap, x_stop, axis=0)
    right.case_id, left.case_id = f"{volume.case_id}-right", f"{volume.case_id}-left"
    z_start, z_stop = foreground_slice_range(left.label)
    height = z_stop - z_start
    val_size = max(1, round(val_fraction * height))
    val_start = z_start + round(0.45 * height) - val_size // 2
    return {
        "train": [
            left.slab(z_start, val_start - gap),
            left.slab(val_start + val_size + gap, z_stop),
        ],
        "val": [left.slab(val_start, val_start + val_size)],
        "test": [right],
    }


def _atlas(cfg: DataConfig, wanted: Sequence[str], check: bool):
    volume = load_atlas_demo(cfg.root, cfg.downsample, normalize=False)
    subsets = atlas_demo_split(volume, cfg.split_fractions[1])
    return {name: subsets[name] for name in wanted}, list(ATLAS_CLASSES)
