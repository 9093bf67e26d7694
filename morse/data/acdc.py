"""ACDC cardiac cine MRI as SSL4MIS distributes it.

Layout::

    ACDC/
      train_slices.list  train.list  val.list  test.list
      data/slices/patient001_frame01_slice_1.h5   datasets image, label (H, W)
      data/patient001_frame01.h5                  datasets image, label (D, H, W)

Classes (:data:`ACDC_CLASSES`): 0 background, 1 RV (right ventricle cavity),
2 Myo (left ventricular myocardium), 3 LV (left ventricle cavity). SSL4MIS's images are
already normalised: SSL4MIS's ``acdc_data_processing.py`` reads each NIfTI with SimpleITK
((D, H, W) arrays) and min-max scales each volume to [0, 1]; use the ``"none"`` intensity
scheme on them (``"minmax"`` is for raw scans). The h5 files carry no spacing: the loaders
use ``spacing`` (see :mod:`morse.data.synapse`; without it ``Volume.spacing_known`` is
False). Volumes are transposed from (D, H, W) to (H, W, D) so slice k is ``image[..., k]``.

As the ``acdc`` data format (registered here): training takes ``train_slices.list``,
validation and test the volumes of ``val.list`` and ``test.list``.

Example:
    >>> import tempfile, h5py, numpy as np
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> with h5py.File(d / "patient001_frame01.h5", "w") as f:
    ...     _ = f.create_dataset("image", data=np.zeros((3, 8, 6), np.float32))
    ...     _ = f.create_dataset("label", data=np.zeros((3, 8, 6), np.uint8))
    >>> vol = load_acdc_volume(d / "patient001_frame01.h5", spacing=(1.5, 1.5, 10.0))
    >>> vol.image.shape, vol.label.shape, vol.spacing, acdc_patient_of(vol.case_id)
    ((1, 8, 6, 3), (8, 6, 3), (1.5, 1.5, 10.0), 'patient001')
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from morse.config import DataConfig

from .formats import DataFormat, Loaded, dataset_root, files_record, register_format
from .spacing import SpacingOf, load_each, spacing_lookup
from .split import Split
from .synapse import read_h5_arrays, read_list_file, volume_from_dhw, volume_from_slice
from .validate import checked_label
from .volume import Volume

__all__ = [
    "ACDC_CLASSES",
    "acdc_patient_of",
    "read_acdc_list",
    "load_acdc_slice",
    "load_acdc_slices",
    "load_acdc_volume",
    "load_acdc_volumes",
]

ACDC_CLASSES: tuple[str, ...] = ("background", "RV", "Myo", "LV")
"""Class names by label value."""

_LISTS = ("train_slices", "train", "val", "test")
_PATIENT = re.compile(r"^(?P<patient>patient\d+)")
_SLICE = re.compile(r"^(?P<case>.+)_slice_\d+$")


def acdc_patient_of(name: str) -> str:
    """Patient of a case or slice name (``"patient001_frame01_slice_3"`` -> ``"patient001"``).

    Split ACDC by patient: the two frames (ED and ES) of one patient must not be separated.
    """
    match = _PATIENT.match(name)
    return match["patient"] if match else name


def acdc_case_of(name: str) -> str:
    """Volume of a slice name (``"patient001_frame01_slice_3"`` -> ``"patient001_frame01"``)."""
    match = _SLICE.match(name)
    return match["case"] if match else name


def read_acdc_list(root: str | Path, split: str = "train_slices") -> list[str]:
    """Names in ``{root}/{split}.list`` (``train_slices``, ``train``, ``val`` or ``test``)."""
    if split not in _LISTS:
        raise ValueError(f"split must be one of {_LISTS}, got {split!r}")
    return read_list_file(Path(root) / f"{split}.list")


def _label(label: np.ndarray, path: Path) -> np.ndarray:
    where = f"outside 0..{len(ACDC_CLASSES) - 1} ({', '.join(ACDC_CLASSES)})"
    return checked_label(label, path, range(len(ACDC_CLASSES)), where,
                         "use SSL4MIS's ACDC files")


def load_acdc_slice(path: str | Path, spacing: Sequence[float] | None = None) -> Volume:
    """A slice file as a Volume: image (1, H, W, 1), label (H, W, 1)."""
    path = Path(path)
    data = read_h5_arrays(path, ("image", "label"))
    return volume_from_slice(data["image"], _label(data["label"], path), path, spacing,
                             path.name.removesuffix(".h5"), "use the files of data/slices/")


def load_acdc_slices(
    root: str | Path,
    names: Sequence[str] | None = None,
    spacing: Sequence[float] | SpacingOf | None = None,
) -> list[Volume]:
    """Slices ``data/slices/{name}.h5`` (default: every name in ``train_slices.list``)."""
    root = Path(root)
    names = read_acdc_list(root, "train_slices") if names is None else list(names)
    return load_each(load_acdc_slice, root / "data" / "slices", ".h5", names, spacing)


def load_acdc_volume(path: str | Path, spacing: Sequence[float] | None = None) -> Volume:
    """A volume file as a Volume: image (1, H, W, D), label (H, W, D); spacing per (H, W, D)."""
    path = Path(path)
    data = read_h5_arrays(path, ("image", "label"))
    return volume_from_dhw(data["image"], _label(data["label"], path), path, spacing,
                           path.name.removesuffix(".h5"), "use the volume files of data/")


def load_acdc_volumes(
    root: str | Path,
    split: str = "val",
    names: Sequence[str] | None = None,
    spacing: Sequence[float] | SpacingOf | None = None,
) -> list[Volume]:
    """Volumes ``data/{name}.h5`` of a list (``train``, ``val`` or ``test``) or given names."""
    root = Path(root)
    names = read_acdc_list(root, split) if names is None else list(names)
    return load_each(load_acdc_volume, root / "data", ".h5", names, spacing)


def _load(cfg: DataConfig, wanted: Sequence[str], check: bool) -> Loaded:
    root = dataset_root(cfg)
    spacing = spacing_lookup(cfg.spacing, cfg.spacing_file, acdc_case_of)
    slices = read_acdc_list(root, "train_slices")
    split = Split(sorted({acdc_case_of(n) for n in slices}), read_acdc_list(root, "val"),
                  read_acdc_list(root, "test"))
    volumes: dict[str, list[Volume]] = {}
    if "train" in wanted:
        volumes["train"] = load_acdc_slices(root, slices, spacing)
    for name in set(wanted) & {"val", "test"}:
        volumes[name] = load_acdc_volumes(root, name, spacing=spacing)
    return Loaded(volumes, split)


# SSL4MIS (acdc_data_processing.py): each MR volume min-max scaled to [0, 1]
register_format("acdc", DataFormat(_load, lambda cfg: list(ACDC_CLASSES),
                                   files_record("minmax", "MRI"), takes_spacing=True))
