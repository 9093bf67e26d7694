"""From a data config to training samples and evaluation volumes, for every registered format
(:mod:`morse.data.formats`), normalised as the run's preprocessing record says.

2D training slices keep their size when ``data.slice_size`` is unset: they are padded to a
common multiple of 32 (:func:`pad_slices`), so slices of any size train without a setting."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from morse.config import DataConfig
from morse.errors import DataError
from morse.shapes import PAD_MULTIPLE, padded_size

from .datasets import PatchDataset, SliceDataset
from .formats import data_format
from .geometry import plan_geometry, to_network
from .intensity import check_record, normalize_volume
from .split import Split, check_same_split
from .volume import Volume

__all__ = [
    "PreparedData", "prepare_data", "plan_dataset_geometry", "load_eval_volumes", "pad_slices",
    "split_of",
]


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
    geometry = plan_dataset_geometry(cfg, train)
    if geometry is not None:
        record["geometry"] = geometry
    steps = record["intensity"]

    def network_ready(volume: Volume) -> Volume:
        volume = normalize_volume(volume, steps)
        return volume if geometry is None else to_network(volume, geometry)

    train = [network_ready(v) for v in train]
    return PreparedData(
        train=_training_dataset(cfg, train),
        val=[network_ready(v) for v in loaded.volumes["val"]],
        class_names=fmt.class_names(cfg),
        in_channels=train[0].num_channels,
        preprocessing=record,
        split=loaded.split,
    )


def plan_dataset_geometry(cfg: DataConfig, train: Sequence[Volume]) -> dict | None:
    """The geometry ``data.target_spacing`` asks for (see :mod:`morse.data.geometry`), planned
    on the training volumes; None keeps the grids as stored."""
    setting = cfg.target_spacing
    if setting == "auto":
        setting = "median" if cfg.format in ("nnunet", "msd") else None
    if setting is None:
        if cfg.slice_axis is not None:
            raise DataError("data.slice_axis picks the axis of a resampled grid; set "
                            "data.target_spacing (auto or median or sizes) or remove it")
        return None
    target = None if setting == "median" else setting
    return plan_geometry(train, target, cfg.spatial_dims, cfg.slice_axis)


def load_eval_volumes(
    cfg: DataConfig,
    subset: str = "test",
    preprocessing: dict | None = None,
    saved_split: Path | None = None,
) -> list[Volume]:
    """The labelled, normalised volumes of ``subset`` ("val" or "test"), on their own grids
    (predict them with the record's ``geometry``, see :func:`morse.inference.trained.predict_case`).

    Args:
        cfg: the run's data config.
        subset: "val" or "test".
        preprocessing: the run's record (from its checkpoint); None computes it again from the
            training subset, which gives the same record at the cost of reading that subset.
        saved_split: the run's ``split.json``; a split of today's cases that differs from it
            is refused (:func:`morse.data.split.check_same_split`).
    """
    if subset not in ("val", "test"):
        raise ValueError(f"subset must be 'val' or 'test', got {subset!r}")
    fmt = data_format(cfg)
    loaded = fmt.load(cfg, (subset,), False)
    if saved_split is not None:
        check_same_split(loaded.split, saved_split)
    volumes = loaded.volumes[subset]
    if preprocessing is None:
        train = functools.cache(lambda: fmt.load(cfg, ("train",), False).volumes["train"])
        preprocessing = fmt.preprocessing(cfg, train)
    steps = check_record(preprocessing, cfg.root)["intensity"]
    return [normalize_volume(v, steps) for v in volumes]


def split_of(cfg: DataConfig) -> Split:
    """The case ids of each subset that ``cfg`` gives, without loading any scan (the demo
    formats read their one volume): enough to refuse an empty subset before training."""
    return data_format(cfg).load(cfg, (), False).split


def _training_dataset(cfg: DataConfig, volumes: Sequence[Volume]) -> Dataset:
    if cfg.spatial_dims == 2:
        return SliceDataset(
            volumes if cfg.slice_size is not None else pad_slices(volumes),
            slice_size=cfg.slice_size, augment=True, seed=cfg.seed,
            foreground_only=cfg.foreground_slices_only, empty_fraction=0.1,
        )
    return PatchDataset(
        volumes, cfg.patch_size, cfg.samples_per_volume, seed=cfg.seed, augment=True
    )


def pad_slices(volumes: Sequence[Volume], multiple: int = PAD_MULTIPLE) -> list[Volume]:
    """Volumes whose slices (the first two spatial axes) are padded at their far ends to one
    common size, each side the smallest multiple of ``multiple`` that holds every case.

    Used for 2D training without ``data.slice_size``: the backbones need multiples of 32 and
    a batch needs one slice size. Image and label are both edge-replicated, as inference pads
    a slice (replicate) before cropping the prediction back, so the network sees the same kind
    of border in training and use; padding at the far ends keeps the affine valid.

    Args:
        volumes: images (C, H, W[, D]) with labels (H, W[, D]).

    Returns:
        New volumes, images (C, H', W'[, D]) and labels (H', W'[, D]) with H', W' the
        common padded size.

    >>> v = Volume(np.ones((1, 20, 40, 3)), np.ones((20, 40, 3)))
    >>> [p.image.shape for p in pad_slices([v, v.slab(0, 1)])]
    [(1, 32, 64, 3), (1, 32, 64, 1)]
    """
    sizes = np.array([padded_size(v.spatial_shape[:2], multiple) for v in volumes])
    target = sizes.max(axis=0) if len(volumes) else ()
    padded = []
    for volume in volumes:
        pads = [(0, int(t) - n) for t, n in zip(target, volume.spatial_shape[:2], strict=True)]
        rest = [(0, 0)] * (volume.spatial_dims - 2)
        label = None if volume.label is None else np.pad(volume.label, pads + rest, mode="edge")
        image = np.pad(volume.image, [(0, 0), *pads, *rest], mode="edge")
        padded.append(replace(volume, image=image, label=label))
    return padded
