"""Synapse multi-organ CT as TransUNet distributes it.

Layout::

    Synapse/
      train_npz/case0005_slice000.npz     keys image (H, W) float, label (H, W)
      test_vol_h5/case0001.npy.h5         datasets image, label shaped (D, H, W)
      lists/lists_Synapse/train.txt       slice names (case0005_slice000)
      lists/lists_Synapse/test_vol.txt    case names (case0001)

TransUNet's files are already clipped to [-125, 275] HU and scaled to [0, 1]; use the
``"none"`` intensity scheme on them (``"ct"`` is for raw HU). Label values follow TransUNet's
order (:data:`SYNAPSE_CLASSES`): 1 aorta, 2 gallbladder, 3 left kidney, 4 right kidney,
5 liver, 6 pancreas, 7 spleen, 8 stomach. Files holding the 13 original BTCV labels can be
mapped with ``remap_btcv=True`` (:data:`BTCV_TO_SYNAPSE`).

The files carry no spacing: the loaders put ``spacing`` (one voxel size, or a case id ->
voxel size function, see :mod:`morse.data.spacing`) on a diagonal affine; without it the
affine is the identity and ``Volume.spacing_known`` is False (distances in voxels). Test
volumes are transposed from (D, H, W) to (H, W, D) so that slice k is ``image[..., k]`` as
everywhere in the project. TransUNet's arrays are in SimpleITK's (z, y, x) order (its test
script writes predictions back with ``sitk.GetImageFromArray``), so rows and columns are
nibabel's second and first axes: a raw NIfTI is transposed to (y, x, z) before prediction.

As the ``synapse`` data format (registered here): training takes the ``train_npz`` slices of
the ``train.txt`` cases not held out for validation (split by case), validation stacks each
held-out case's slices into a volume, test is the ``test_vol_h5`` volumes.

Example:
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> np.savez(d / "case0005_slice003.npz", image=np.zeros((8, 6), np.float32),
    ...          label=np.ones((8, 6), np.float32))
    >>> vol = load_synapse_slice(d / "case0005_slice003.npz")
    >>> vol.case_id, vol.image.shape, vol.label.shape, synapse_case_of(vol.case_id)
    ('case0005_slice003', (1, 8, 6, 1), (8, 6, 1), 'case0005')
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from morse.config import DataConfig
from morse.errors import DataError

from .formats import DataFormat, Loaded, dataset_root, files_record, register_format
from .spacing import SpacingOf, load_each, spacing_lookup
from .split import split_cases
from .validate import checked_label
from .volume import Volume

__all__ = [
    "SYNAPSE_CLASSES",
    "BTCV_TO_SYNAPSE",
    "remap_btcv_labels",
    "read_list_file",
    "read_h5_arrays",
    "diagonal_affine",
    "synapse_case_of",
    "read_synapse_list",
    "load_synapse_slice",
    "load_synapse_slices",
    "load_synapse_volume",
    "load_synapse_volumes",
    "stack_slices",
]

SYNAPSE_CLASSES: tuple[str, ...] = (
    "background",
    "aorta",
    "gallbladder",
    "kidney_left",
    "kidney_right",
    "liver",
    "pancreas",
    "spleen",
    "stomach",
)
"""Class names by label value, TransUNet's order."""

BTCV_TO_SYNAPSE: dict[int, int] = {8: 1, 4: 2, 3: 3, 2: 4, 6: 5, 11: 6, 1: 7, 7: 8}
"""Original BTCV label (1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus,
6 liver, 7 stomach, 8 aorta, 9 IVC, 10 portal/splenic vein, 11 pancreas, 12/13 adrenals)
-> TransUNet's 8-organ value; the other BTCV organs become background."""

_SLICE_NAME = re.compile(r"^(?P<case>.+?)_slice\d+$")


def remap_btcv_labels(label: np.ndarray) -> np.ndarray:
    """Map the 13 BTCV labels to TransUNet's 8 organs (others -> 0).

    >>> remap_btcv_labels(np.array([0, 1, 5, 8, 11])).tolist()
    [0, 7, 0, 1, 6]
    """
    lut = np.zeros(14, dtype=np.int64)
    for btcv, synapse in BTCV_TO_SYNAPSE.items():
        lut[btcv] = synapse
    return lut[checked_label(label, "label", range(14), "outside 0..13",
                             "BTCV labels are 0..13; pass files holding them")]


def read_list_file(path: str | Path) -> list[str]:
    """Non-empty stripped lines of a list file (``train.txt``, ``val.list``...)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: list file not found; check the dataset root")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_h5_arrays(path: str | Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read datasets ``keys`` from an HDF5 file (DataError naming a missing key or file)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the dataset root and list files")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in keys if k not in f]
            if missing:
                raise DataError(
                    f"{path}: missing dataset(s) {missing} (has {sorted(f.keys())}); "
                    f"the file must hold {list(keys)}"
                )
            return {k: np.asarray(f[k][()]) for k in keys}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot be read as HDF5 ({exc}); re-download the file") from exc


def _read_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the dataset root and list files")
    try:
        with np.load(path) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {missing} (has {data.files}); "
                    f"the file must hold {list(keys)}"
                )
            return {k: np.asarray(data[k]) for k in keys}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot be read as .npz ({exc}); re-download the file") from exc


def diagonal_affine(spacing: Sequence[float]) -> np.ndarray:
    """(4, 4) affine with ``spacing`` (0 to 3 values, missing ones 1 mm) on the diagonal.

    >>> diagonal_affine((0.8, 0.8)).diagonal().tolist()
    [0.8, 0.8, 1.0, 1.0]
    """
    spacing = [float(s) for s in spacing][:3]
    if any(s <= 0 for s in spacing):
        raise ValueError(f"spacing must be positive, got {spacing}")
    return np.diag([*spacing, *[1.0] * (3 - len(spacing)), 1.0])


def volume_from_slice(
    image: np.ndarray, label: np.ndarray, path: Path, spacing: Sequence[float] | None,
    case_id: str, fix: str,
) -> Volume:
    """A 2D (H, W) image/label pair as a Volume: image (1, H, W, 1), label (H, W, 1)."""
    if image.ndim != 2 or label.shape != image.shape:
        raise DataError(
            f"{path}: image {image.shape} and label {label.shape} must both be (H, W); {fix}"
        )
    return Volume(image[None, :, :, None], label[:, :, None], diagonal_affine(spacing or ()),
                  case_id, str(path), spacing_known=spacing is not None)


def volume_from_dhw(
    image: np.ndarray, label: np.ndarray, path: Path, spacing: Sequence[float] | None,
    case_id: str, fix: str,
) -> Volume:
    """A (D, H, W) image/label pair as a Volume: image (1, H, W, D), label (H, W, D)."""
    if image.ndim != 3 or label.shape != image.shape:
        raise DataError(
            f"{path}: image {image.shape} and label {label.shape} must both be (D, H, W); {fix}"
        )
    return Volume(np.transpose(image, (1, 2, 0))[None], np.transpose(label, (1, 2, 0)),
                  diagonal_affine(spacing or ()), case_id, str(path),
                  spacing_known=spacing is not None)


def _integer_label(label: np.ndarray, path: Path, remap_btcv: bool) -> np.ndarray:
    if remap_btcv:
        return remap_btcv_labels(checked_label(label, path))
    top = len(SYNAPSE_CLASSES) - 1
    return checked_label(label, path, range(top + 1), f"outside 0..{top}",
                         "for the 13 BTCV labels pass remap_btcv=True")


def synapse_case_of(name: str) -> str:
    """Case of a slice name: ``"case0005_slice012"`` -> ``"case0005"`` (others unchanged)."""
    match = _SLICE_NAME.match(name)
    return match["case"] if match else name


def read_synapse_list(root: str | Path, split: str = "train") -> list[str]:
    """Names listed in ``lists/lists_Synapse/{split}.txt`` (``train`` or ``test_vol``)."""
    return read_list_file(Path(root) / "lists" / "lists_Synapse" / f"{split}.txt")


def load_synapse_slice(
    path: str | Path, spacing: Sequence[float] | None = None, remap_btcv: bool = False
) -> Volume:
    """One training slice as a Volume: image (1, H, W, 1), label (H, W, 1)."""
    path = Path(path)
    data = _read_npz(path, ("image", "label"))
    label = _integer_label(data["label"], path, remap_btcv)
    return volume_from_slice(data["image"], label, path, spacing, path.name.removesuffix(".npz"),
                             "use TransUNet's train_npz slices")


def load_synapse_slices(
    root: str | Path,
    names: Sequence[str] | None = None,
    spacing: Sequence[float] | SpacingOf | None = None,
    remap_btcv: bool = False,
) -> list[Volume]:
    """Slices ``train_npz/{name}.npz`` (default: every name in ``train.txt``)."""
    root = Path(root)
    names = read_synapse_list(root, "train") if names is None else list(names)
    load = functools.partial(load_synapse_slice, remap_btcv=remap_btcv)
    return load_each(load, root / "train_npz", ".npz", names, spacing)


def load_synapse_volume(
    path: str | Path, spacing: Sequence[float] | None = None, remap_btcv: bool = False
) -> Volume:
    """A test volume ``caseXXXX.npy.h5`` as a Volume: image (1, H, W, D), label (H, W, D).

    ``spacing`` is per output axis (H, W, D).
    """
    path = Path(path)
    data = read_h5_arrays(path, ("image", "label"))
    label = _integer_label(data["label"], path, remap_btcv)
    return volume_from_dhw(data["image"], label, path, spacing, path.name.split(".")[0],
                           "use TransUNet's test_vol_h5 volumes")


def load_synapse_volumes(
    root: str | Path,
    names: Sequence[str] | None = None,
    spacing: Sequence[float] | SpacingOf | None = None,
    remap_btcv: bool = False,
) -> list[Volume]:
    """Volumes ``test_vol_h5/{name}.npy.h5`` (default: every name in ``test_vol.txt``)."""
    root = Path(root)
    names = read_synapse_list(root, "test_vol") if names is None else list(names)
    load = functools.partial(load_synapse_volume, remap_btcv=remap_btcv)
    return load_each(load, root / "test_vol_h5", ".npy.h5", names, spacing)


def stack_slices(slices: list[Volume], case_id: str) -> Volume:
    """Slices (C, H, W, 1) of one case, in name order, as a volume (C, H, W, D)."""
    image = np.concatenate([s.image for s in slices], axis=-1)
    label = np.concatenate([s.label for s in slices], axis=-1)
    return replace(slices[0], image=image, label=label, case_id=case_id)


def _load(cfg: DataConfig, wanted: Sequence[str], check: bool) -> Loaded:
    root = dataset_root(cfg)
    spacing = spacing_lookup(cfg.spacing, cfg.spacing_file, synapse_case_of)
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


# TransUNet: HU clipped to [-125, 275] and scaled to [0, 1] (the Synapse files)
register_format("synapse", DataFormat(_load, lambda cfg: list(SYNAPSE_CLASSES),
                                      files_record("ct", "CT"), takes_spacing=True))
