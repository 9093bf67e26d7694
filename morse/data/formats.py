"""Dataset formats, registered by name: how each loads its subsets, names its classes and
records how raw scans become its training data.

=========== ==================================== ====================== ======================
format      training                             validation             test
=========== ==================================== ====================== ======================
nnunet/msd  split by case (seeded, or split_file) split by case          split by case
synapse     train_npz slices of train.txt cases  held-out train cases   test_vol_h5 volumes
acdc        train_slices.list                    val.list volumes       test.list volumes
atlas-demo  left hemisphere (Colin27 + AAL)      left, mid-axial slab   right hemisphere
mni-tissue  left hemisphere (MNI152 tissues),    left, axial slab at    left, axial slab at
            but the val and test slabs           30% of the height      65% of the height
=========== ==================================== ====================== ======================

Each format's module registers it (:mod:`morse.data.nnunet` registers nnunet and msd,
:mod:`morse.data.synapse`, :mod:`morse.data.acdc`, :mod:`morse.data.atlas_demo`,
:mod:`morse.data.mni_tissue`); importing :mod:`morse.data` imports them all. A new format is
one :func:`register_format` call with a :class:`DataFormat`.

>>> available_formats()
['acdc', 'atlas-demo', 'mni-tissue', 'msd', 'nnunet', 'synapse']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from morse.config import DataConfig
from morse.config.choices import FORMATS
from morse.errors import DataError

from .intensity import make_record, resolve_intensity
from .split import Split
from .volume import Volume

__all__ = [
    "Loaded",
    "DataFormat",
    "register_format",
    "data_format",
    "available_formats",
    "dataset_root",
    "files_record",
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


def files_record(file_scheme: str, channel: str) -> Callable[[DataConfig, TrainVolumes], dict]:
    """The record builder of a format whose files were made from raw scans as (z, y, x)
    SimpleITK arrays, normalised by ``file_scheme``; ``normalize: auto`` leaves such files as
    they are."""

    def record(cfg: DataConfig, train: TrainVolumes) -> dict:
        scheme = "none" if cfg.normalize == "auto" else cfg.normalize
        return make_record(resolve_intensity(scheme, [channel], train),
                           file_intensity=resolve_intensity(file_scheme, [channel], train)[0],
                           axis_order=(1, 0, 2))

    return record


def dataset_root(cfg: DataConfig) -> Path:
    """``data.root`` as a Path; DataError when it is not a folder."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found; set data.root to your dataset folder")
    return root
