"""From a data config to training samples and evaluation volumes, for every registered format
(:mod:`morse.data.formats`), normalised as the run's preprocessing record says."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from torch.utils.data import Dataset

from morse.config import DataConfig

from .datasets import PatchDataset, SliceDataset
from .formats import data_format
from .intensity import check_record, normalize_volume
from .split import Split
from .volume import DataError, Volume

__all__ = ["PreparedData", "prepare_data", "load_eval_volumes"]


@dataclass
class PreparedData:
    """What training needs.

    Attributes:
        train: a Dataset of ``{"image": (C, *S), "label": (1, *S)}`` samples.
        val: labelled validation volumes (C, *S), normalised.
        class_names: K names, background first.
        in_channels: C.
        preprocessing: how a raw scan becomes the network's input
            (:func:`morse.data.intensity.make_record`); saved with the model.
        split: case ids of the train, val and test subsets (None: not known).
    """

    train: Dataset
    val: list[Volume]
    class_names: list[str]
    in_channels: int
    preprocessing: dict
    split: Split | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def prepare_data(cfg: DataConfig, check: bool = True) -> PreparedData:
    """Load the training samples and validation volumes a data config describes."""
    fmt = data_format(cfg)
    loaded = fmt.load(cfg, ("train", "val"), check)
    train = loaded.volumes["train"]
    if not train:
        raise DataError(f"{cfg.root}: the training subset is empty; check the split")
    record = fmt.preprocessing(cfg, lambda: train)
    steps = record["intensity"]
    train = [normalize_volume(v, steps) for v in train]
    return PreparedData(
        train=_training_dataset(cfg, train),
        val=[normalize_volume(v, steps) for v in loaded.volumes["val"]],
        class_names=fmt.class_names(cfg),
        in_channels=train[0].num_channels,
        preprocessing=record,
        split=loaded.split,
    )


def load_eval_volumes(
    cfg: DataConfig, subset: str = "test", preprocessing: dict | None = None
) -> list[Volume]:
    """The labelled, normalised volumes of ``subset`` ("val" or "test").

    Args:
        cfg: the run's data config.
        subset: "val" or "test".
        preprocessing: the run's record (from its checkpoint); None computes it again from the
            training subset, which gives the same record at the cost of reading that subset.
    """
    if subset not in ("val", "test"):
        raise ValueError(f"subset must be 'val' or 'test', got {subset!r}")
    fmt = data_format(cfg)
    volumes = fmt.load(cfg, (subset,), False).volumes[subset]
    if preprocessing is None:
        train = functools.cache(lambda: fmt.load(cfg, ("train",), False).volumes["train"])
        preprocessing = fmt.preprocessing(cfg, train)
    steps = check_record(preprocessing, cfg.root)["intensity"]
    return [normalize_volume(v, steps) for v in volumes]


def _training_dataset(cfg: DataConfig, volumes: Sequence[Volume]) -> Dataset:
    if cfg.spatial_dims == 2:
        _check_slice_sizes(cfg, volumes)
        return SliceDataset(
            volumes, slice_size=cfg.slice_size, augment=True, seed=cfg.seed,
            foreground_only=cfg.foreground_slices_only, empty_fraction=0.1,
        )
    return PatchDataset(
        volumes, cfg.patch_size, cfg.samples_per_volume, seed=cfg.seed, augment=True
    )


def _check_slice_sizes(cfg: DataConfig, volumes: Sequence[Volume]) -> None:
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
