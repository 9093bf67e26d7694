"""Write a run config's data as an nnU-Net v2 raw dataset, with the config's split as fold 0.

``DatasetNNN_Name/`` gets ``imagesTr``/``labelsTr`` (the train and val subsets),
``imagesTs``/``labelsTs`` (the test subset), ``dataset.json``, and ``splits_final.json`` with one
fold: train -> train, val -> val. nnU-Net reads that file from its *preprocessed* folder, so it
is also written there when given (:func:`write_splits`): nnU-Net's 5-fold default would mix the
subsets, and a dataset of fewer than 5 training cases (the demos) cannot be split 5 ways.

The images are the files' intensities as the format reads them (at ``data.downsample`` where
the format applies it, e.g. the demos at 2 mm): nnU-Net normalises them itself.

Example (the file names of one case with two channels):
    >>> raw_names("slab_1", 2)
    ['slab_1_0000.nii.gz', 'slab_1_0001.nii.gz']
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from morse.config import Config
from morse.errors import DataError
from morse.io import atomic_write_text

from .formats import data_format
from .nifti import save_nifti
from .volume import Volume

__all__ = ["dataset_folder_name", "raw_names", "write_raw_dataset", "write_splits"]

SUBSET_FOLDERS = {"train": "Tr", "val": "Tr", "test": "Ts"}
"""Where each subset goes: nnU-Net trains on ``*Tr`` (fold 0 holds val out), tests on ``*Ts``."""


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name, ``Dataset`` + 3 digits + ``_`` + a name of letters, digits, ``_``.

    >>> dataset_folder_name(501, "demo-colin27-aal")
    'Dataset501_demo_colin27_aal'
    """
    if not 1 <= dataset_id <= 999:
        raise DataError(f"--id {dataset_id}: nnU-Net dataset ids run from 1 to 999 "
                        "(pick one no other dataset of yours uses, e.g. 501)")
    return f"Dataset{dataset_id:03d}_{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')}"


def raw_names(case: str, channels: int) -> list[str]:
    """The image file names of ``case`` (one per channel, ``_0000``...)."""
    return [f"{case}_{c:04d}.nii.gz" for c in range(channels)]


def _case_names(volumes: dict[str, list[Volume]]) -> dict[str, list[str]]:
    """Unique file-safe case names per subset, ``<subset>_<index>`` prefixed: slabs of one
    scan share its case id, so the id alone would collide."""
    return {subset: [f"{subset}_{i}_{re.sub(r'[^A-Za-z0-9]+', '_', v.case_id)}"
                     for i, v in enumerate(vols)] for subset, vols in volumes.items()}


def write_raw_dataset(cfg: Config, raw_root: Path, dataset_id: int) -> Path:
    """Write ``cfg``'s train, val and test subsets under ``raw_root`` as an nnU-Net dataset.

    Returns:
        The dataset folder. DataError when it exists already (nothing is replaced).
    """
    folder = Path(raw_root) / dataset_folder_name(dataset_id, cfg.name)
    if folder.exists():
        raise DataError(f"{folder}: already exists; remove it or choose another --id")
    spec = data_format(cfg.data)
    loaded = spec.load(cfg.data, ["train", "val", "test"], True)
    names = _case_names(loaded.volumes)
    for subset, vols in loaded.volumes.items():
        for volume, case in zip(vols, names[subset]):
            _write_case(folder, SUBSET_FOLDERS[subset], case, volume)
    classes = spec.class_names(cfg.data)
    first = loaded.volumes["train"][0]
    atomic_write_text(folder / "dataset.json", json.dumps({
        "channel_names": {str(c): f"channel{c}" for c in range(first.image.shape[0])},
        "labels": {name: index for index, name in enumerate(["background", *classes[1:]])},
        "numTraining": len(names["train"]) + len(names["val"]),
        "file_ending": ".nii.gz",
        "description": f"{cfg.name}, written by morse nnunet dataset; "
                       "splits_final.json: fold 0 is the config's train/val split",
    }, indent=2))
    write_splits(folder, names["train"], names["val"])
    return folder


def write_splits(folder: Path, train: list[str], val: list[str]) -> Path:
    """``splits_final.json`` with one fold (nnU-Net's format) in ``folder``."""
    path = Path(folder) / "splits_final.json"
    atomic_write_text(path, json.dumps([{"train": train, "val": val}], indent=2))
    return path


def _write_case(folder: Path, part: str, case: str, volume: Volume) -> None:
    if volume.label is None:
        raise DataError(f"{volume.source}: case {volume.case_id} has no label; nnU-Net's "
                        "raw dataset needs one for every training and test case")
    if volume.image.ndim != 4:
        raise DataError(f"{volume.source}: nnU-Net raw datasets hold 3D volumes; this case "
                        f"has {volume.image.ndim - 1} spatial axes")
    for channel, name in zip(volume.image, raw_names(case, volume.image.shape[0])):
        save_nifti(nib.Nifti1Image(channel.astype(np.float32), volume.affine),
                   folder / f"images{part}" / name)
    save_nifti(nib.Nifti1Image(volume.label.astype(np.uint8), volume.affine),
               folder / f"labels{part}" / f"{case}.nii.gz")
