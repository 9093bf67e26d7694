"""Dataset formats, registered by name: how each loads its subsets, names its classes and
records how raw scans become its training data.

=========== ==================================== ====================== ======================
format      training                             validation             test
=========== ==================================== ====================== ======================
nnunet/msd  split by case (seeded, or split_file) split by case          split by case
synapse     train_npz slices of train.txt cases  held-out train cases   test_vol_h5 volumes
acdc        train_slices.list                    val.list volumes       test.list volumes
atlas-demo  left hemisphere (Colin27 + AAL)      left, mid-axial slab   right hemisphere
=========== ==================================== ====================== ======================

A new format is one :func:`register_format` call with a :class:`DataFormat`.

>>> available_formats()
['acdc', 'atlas-demo', 'msd', 'nnunet', 'synapse']
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from morse.config import DataConfig
from morse.config.choices import FORMATS
from morse.errors import DataError

from .acdc import ACDC_CLASSES, acdc_case_of, load_acdc_slices, load_acdc_volumes, read_acdc_list
from .atlas_demo import ATLAS_CLASSES, foreground_slice_range, load_atlas_demo
from .check import check_dataset, format_problems
from .dataset_json import read_dataset_json
from .intensity import foreground_stats, make_record, resolve_intensity
from .nnunet import list_cases, load_case
from .spacing import SpacingOf, spacing_lookup
from .split import Split, load_split, split_cases
from .synapse import (
    SYNAPSE_CLASSES,
    load_synapse_slices,
    load_synapse_volumes,
    read_synapse_list,
    synapse_case_of,
)
from .volume import Volume

__all__ = [
    "Loaded",
    "DataFormat",
    "register_format",
    "data_format",
    "available_formats",
    "atlas_demo_split",
]

TrainVolumes = Callable[[], Sequence[Volume]]
"""The raw training volumes, loaded on the first call (only when statistics are needed)."""


@dataclass
class Loaded:
    """Subsets as read from the files (not normalised) and the split they come from.

    Attributes:
        volumes: subset name -> Volumes with image (C, *spatial), for the subsets asked for.
        split: case ids of every subset (train, val and test), whichever were loaded.
    """

    volumes: dict[str, list[Volume]]
    split: Split


@dataclass(frozen=True)
class DataFormat:
    """A registry entry.

    Attributes:
        load: ``load(cfg, subsets, check) -> Loaded`` for subsets among train, val, test
            (``check``: run the format's dataset check first).
        class_names: ``class_names(cfg)``: K names, background first.
        preprocessing: ``preprocessing(cfg, train) -> record`` (see
            :func:`morse.data.intensity.make_record`), ``train`` giving the raw training
            volumes when statistics are needed.
        takes_spacing: the files carry no spacing, so ``data.spacing`` /
            ``data.spacing_file`` apply.
    """

    load: Callable[[DataConfig, Sequence[str], bool], Loaded]
    class_names: Callable[[DataConfig], list[str]]
    preprocessing: Callable[[DataConfig, TrainVolumes], dict]
    takes_spacing: bool = False


_REGISTRY: dict[str, DataFormat] = {}


def register_format(name: str, spec: DataFormat, *, overwrite: bool = False) -> None:
    """Add ``spec`` under ``name`` (the value of ``data.format``)."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"data format '{name}' is already registered (pass overwrite=True)")
    _REGISTRY[name] = spec


def available_formats() -> list[str]:
    """Registered format names, sorted."""
    return sorted(_REGISTRY)


FORMATS.bind(available_formats)  # data.format allows what is registered, when loaded


def data_format(cfg: DataConfig) -> DataFormat:
    """The registry entry of ``cfg.format``, after checking the spacing settings apply."""
    if cfg.format not in _REGISTRY:
        raise DataError(
            f"data.format {cfg.format!r} is unknown; choose one of {available_formats()}"
        )
    spec = _REGISTRY[cfg.format]
    if not spec.takes_spacing and (cfg.spacing is not None or cfg.spacing_file is not None):
        raise DataError(
            f"data.spacing / data.spacing_file: {cfg.format} files carry their own spacing; "
            "remove these settings"
        )
    return spec


def _files_record(file_scheme: str, channel: str) -> Callable[[DataConfig, TrainVolumes], dict]:
    """The record builder of a format whose files were made from raw scans as (z, y, x)
    SimpleITK arrays, normalised by ``file_scheme``; ``normalize: auto`` leaves such files as
    they are."""

    def record(cfg: DataConfig, train: TrainVolumes) -> dict:
        scheme = "none" if cfg.normalize == "auto" else cfg.normalize
        return make_record(resolve_intensity(scheme, [channel], train),
                           file_intensity=resolve_intensity(file_scheme, [channel], train)[0],
                           axis_order=(1, 0, 2))

    return record


def _root(cfg: DataConfig) -> Path:
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found; set data.root to your dataset folder")
    return root


def _spacing(cfg: DataConfig, case_of: Callable[[str], str]) -> SpacingOf:
    return spacing_lookup(cfg.spacing, cfg.spacing_file, case_of)


# ----------------------------------------------------------------------------- nnU-Net / MSD
def _nnunet_load(cfg: DataConfig, wanted: Sequence[str], check: bool) -> Loaded:
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
    if cfg.split_file:
        split = load_split(cfg.split_file, known_cases=cases)
    else:
        split = split_cases(sorted(cases), cfg.split_fractions, cfg.seed)
    subsets = split.as_dict()
    return Loaded({name: [load_case(cases[c], spec) for c in subsets[name]] for name in wanted},
                  split)


def _nnunet_record(cfg: DataConfig, train: TrainVolumes) -> dict:
    channels = read_dataset_json(_root(cfg)).channel_names
    names = [channels[str(c)] for c in range(len(channels))]
    return make_record(resolve_intensity(cfg.normalize, names, train))


# ----------------------------------------------------------------------------- Synapse
def _synapse_load(cfg: DataConfig, wanted: Sequence[str], check: bool) -> Loaded:
    root = _root(cfg)
    spacing = _spacing(cfg, synapse_case_of)
    by_case: dict[str, list[str]] = defaultdict(list)
    for name in read_synapse_list(root, "train"):
        by_case[synapse_case_of(name)].append(name)
    fractions = [1 - cfg.split_fractions[1], cfg.split_fractions[1], 0.0]
    split = replace(split_cases(sorted(by_case), fractions, cfg.seed),
                    test=read_synapse_list(root, "test_vol"))
    volumes: dict[str, list[Volume]] = {}
    if "train" in wanted:
        names = [n for case in split.train for n in by_case[case]]
        volumes["train"] = load_synapse_slices(root, names, spacing)
    if "val" in wanted:
        volumes["val"] = [
            stack_slices(load_synapse_slices(root, sorted(by_case[c]), spacing), c)
            for c in split.val
        ]
    if "test" in wanted:
        volumes["test"] = load_synapse_volumes(root, split.test, spacing)
    return Loaded(volumes, split)


def stack_slices(slices: list[Volume], case_id: str) -> Volume:
    """Slices (C, H, W, 1) of one case, in name order, as a volume (C, H, W, D)."""
    image = np.concatenate([s.image for s in slices], axis=-1)
    label = np.concatenate([s.label for s in slices], axis=-1)
    return replace(slices[0], image=image, label=label, case_id=case_id)


# ----------------------------------------------------------------------------- ACDC
def _acdc_load(cfg: DataConfig, wanted: Sequence[str], check: bool) -> Loaded:
    root = _root(cfg)
    spacing = _spacing(cfg, acdc_case_of)
    slices = read_acdc_list(root, "train_slices")
    split = Split(sorted({acdc_case_of(n) for n in slices}), read_acdc_list(root, "val"),
                  read_acdc_list(root, "test"))
    volumes: dict[str, list[Volume]] = {}
    if "train" in wanted:
        volumes["train"] = load_acdc_slices(root, slices, spacing)
    for name in set(wanted) & {"val", "test"}:
        volumes[name] = load_acdc_volumes(root, name, spacing=spacing)
    return Loaded(volumes, split)


# ----------------------------------------------------------------------------- atlas demo
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


def _atlas_load(cfg: DataConfig, wanted: Sequence[str], check: bool) -> Loaded:
    volume = load_atlas_demo(cfg.root, cfg.downsample, normalize=False)
    subsets = atlas_demo_split(volume, cfg.split_fractions[1])
    names = {name: [f"{v.case_id} slices {_slab_name(v, volume)}" for v in vols]
             for name, vols in subsets.items()}
    return Loaded({name: subsets[name] for name in wanted}, Split(**names))


def _slab_name(part: Volume, whole: Volume) -> str:
    """Where a slab lies in the whole volume: ``x a:b, z c:d`` (voxel indices)."""
    start = np.rint(np.linalg.solve(whole.affine, part.affine[:, 3])[:3]).astype(int)
    axes = [f"{'xyz'[a]} {start[a]}:{start[a] + n}" for a, n in enumerate(part.spatial_shape)
            if n != whole.spatial_shape[a]]
    return ", ".join(axes)


def _atlas_record(cfg: DataConfig, train: TrainVolumes) -> dict:
    """T1 of one head: z-scored over the head (nonzero voxels) with the training subset's
    mean and std, the same for every subset and for predict."""
    if cfg.normalize not in ("auto", "zscore"):
        return make_record(resolve_intensity(cfg.normalize, ["T1"], train))
    stats = foreground_stats(train(), 0, nonzero=True)
    return make_record([{"scheme": "zscore", "mean": stats["mean"], "std": stats["std"]}])


def _names(names: Sequence[str]) -> Callable[[DataConfig], list[str]]:
    return lambda cfg: list(names)


register_format("nnunet", DataFormat(
    _nnunet_load, lambda cfg: read_dataset_json(_root(cfg)).class_names, _nnunet_record))
register_format("msd", _REGISTRY["nnunet"])
# TransUNet: HU clipped to [-125, 275] and scaled to [0, 1] (the Synapse files)
register_format("synapse", DataFormat(
    _synapse_load, _names(SYNAPSE_CLASSES), _files_record("ct", "CT"), takes_spacing=True))
# SSL4MIS (acdc_data_processing.py): each MR volume min-max scaled to [0, 1]
register_format("acdc", DataFormat(
    _acdc_load, _names(ACDC_CLASSES), _files_record("minmax", "MRI"), takes_spacing=True))
register_format("atlas-demo", DataFormat(_atlas_load, _names(ATLAS_CLASSES), _atlas_record))
