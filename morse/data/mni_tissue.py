"""Demo data that installs with pip: the MNI152 2009 T1 template labelled into brain tissues.

Files (shipped inside nilearn's wheel, ``nilearn/datasets/data/``, read with nibabel; nilearn
itself is never imported):

* ``mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``: the symmetric ICBM 2009a T1 template,
  brain extracted (197 x 233 x 189, 1 mm, uint8).
* ``mni_icbm152_{gm,wm}_tal_nlin_sym_09a_converted.nii.gz``: grey- and white-matter
  probability maps on the same grid (uint8, 255 = probability 1).

Labels (:func:`tissue_labels`): a voxel is brain tissue when grey plus white matter make up at
least half of it (``threshold`` 0.5: tissue is more likely than CSF or nothing), and then takes
the more probable of the two; everything else (CSF, outside the brain) is background. Classes:
:data:`TISSUE_CLASSES`.

Split (:func:`tissue_demo_split`; the ``mni-tissue`` data format, registered here): the
template is symmetric, its right hemisphere the exact mirror of the left, so a hemisphere split
would test on what training saw (training flips the slices). The demo keeps the left hemisphere
and holds out axial slabs of it instead: validation at 30% of the brain's height, test at 65%,
each ``gap`` slices away from the training slabs.

Example (synthetic probabilities, no files needed):
    >>> import numpy as np
    >>> tissue_labels(np.array([0.1, 0.3, 0.6, 0.2]), np.array([0.1, 0.25, 0.3, 0.7])).tolist()
    [0, 1, 1, 2]
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from morse.config import DataConfig
from morse.errors import DataError

from .atlas_demo import downsample_volume, foreground_slice_range, head_zscore_record, slab_name
from .formats import DataFormat, Loaded, register_format
from .nifti import grid_problems, read_nifti
from .split import Split
from .volume import Volume

__all__ = [
    "TISSUE_CLASSES",
    "TISSUE_FILES",
    "INSTALL",
    "nilearn_data_dir",
    "tissue_labels",
    "load_mni_tissue",
    "tissue_demo_split",
]

TISSUE_CLASSES: tuple[str, ...] = ("background", "grey_matter", "white_matter")
"""Class names by label value."""

TISSUE_FILES = {kind: f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
                for kind in ("t1", "gm", "wm")}
"""File name of the T1 template and of each probability map, as nilearn ships them."""

INSTALL = 'pip install "morse-seg[demo]" (or pip install nilearn)'


def nilearn_data_dir() -> Path:
    """nilearn's ``datasets/data`` folder, found without importing nilearn.

    Raises:
        DataError: nilearn is not installed.
    """
    spec = importlib.util.find_spec("nilearn")  # finds the package; imports none of it
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"nilearn is not installed; the tissue demo reads its MNI152 template: "
                        f"{INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def tissue_labels(gm: np.ndarray, wm: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Label map (*S) int64 from grey- and white-matter probabilities (*S) in [0, 1].

    0 where ``gm + wm < threshold``, else 1 where ``gm >= wm`` and 2 otherwise.
    """
    tissue = gm + wm >= threshold
    return np.where(tissue, np.where(gm >= wm, 1, 2), 0).astype(np.int64)


def _probability(array: np.ndarray, path: Path) -> np.ndarray:
    """A probability map in [0, 1]: uint8 maps are scaled by 1/255, float maps kept."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if array.min() < 0 or array.max() > 1:
        raise DataError(f"{path}: values {array.min():g}..{array.max():g} are not probabilities "
                        "(uint8 0..255 or float 0..1); use nilearn's file")
    return array


def load_mni_tissue(folder: str | Path | None = None, downsample: int = 1) -> Volume:
    """The MNI152 2009 T1 template with its grey/white-matter labels.

    Args:
        folder: folder holding :data:`TISSUE_FILES`; None: the installed nilearn's.
        downsample: integer factor (see :func:`morse.data.atlas_demo.downsample_volume`).

    Returns:
        Volume with image (1, X, Y, Z) float32 (raw 0..255, not normalised), label (X, Y, Z)
        int64 in ``0..2``, case_id ``"mni152"``.

    Raises:
        DataError: nilearn is missing, a file is missing, or the grids differ.
    """
    fix = (INSTALL if folder is None else
           "set data.root to a folder of nilearn's MNI152 files, or empty for nilearn's own")
    folder = nilearn_data_dir() if folder is None else Path(folder)
    paths = {kind: folder / name for kind, name in TISSUE_FILES.items()}
    for path in paths.values():
        if not path.is_file():
            raise DataError(f"{path}: not found; {fix}")
    image, affine, _ = read_nifti(paths["t1"])
    maps = {}
    for kind in ("gm", "wm"):
        array, map_affine, _ = read_nifti(paths[kind])
        grid = grid_problems(array.shape, map_affine, image.shape, affine, paths["t1"].name,
                             fix="use the files of the same nilearn release")
        if grid:
            raise DataError(f"{paths[kind]}: {grid[0]}")
        maps[kind] = _probability(array, paths[kind])
    label = tissue_labels(maps["gm"], maps["wm"])
    volume = Volume(image.astype(np.float32)[None], label, affine, "mni152", str(paths["t1"]))
    return downsample_volume(volume, downsample)


def tissue_demo_split(volume: Volume, val_fraction: float = 0.1, test_fraction: float = 0.25,
                      gap: int = 2) -> dict:
    """The tissue demo's split: axial slabs of the left hemisphere.

    Validation is a slab of ``val_fraction`` of the brain's height centred at 30% of it, test a
    slab of ``test_fraction`` centred at 65%; training takes the rest, ``gap`` slices away from
    both. The right hemisphere (x > 0 in world coordinates) is left out: on the symmetric
    template it repeats the left.

    Returns:
        ``{"train": [Volume, ...], "val": [Volume], "test": [Volume]}``.

    Raises:
        DataError: the fractions leave no room for training or make the slabs overlap.
    """
    to_voxel = np.linalg.inv(volume.affine)
    midline = int(np.ceil((to_voxel @ np.array([0.0, 0.0, 0.0, 1.0]))[0] - 1e-6))
    x_start, _ = foreground_slice_range(volume.label, axis=0)
    left = volume.slab(x_start, max(midline, x_start + 1), axis=0)
    left.case_id = f"{volume.case_id}-left"
    z_start, z_stop = foreground_slice_range(left.label)
    height = z_stop - z_start

    def centred(size_fraction: float, centre: float) -> tuple[int, int]:
        size = max(1, round(size_fraction * height))
        start = max(z_start, z_start + round(centre * height) - size // 2)
        return start, min(start + size, z_stop)

    val, test = centred(val_fraction, 0.30), centred(test_fraction, 0.65)
    if val[1] + gap > test[0]:
        raise DataError(f"data.split_fractions: validation {val_fraction} and test "
                        f"{test_fraction} of {height} slices overlap; make them smaller")
    bounds = [(z_start, val[0] - gap), (val[1] + gap, test[0] - gap), (test[1] + gap, z_stop)]
    train = [left.slab(a, b) for a, b in bounds if b > a]
    if not train:
        raise DataError(f"data.split_fractions: no training slices are left of {height}; "
                        "make validation and test smaller")
    return {"train": train, "val": [left.slab(*val)], "test": [left.slab(*test)]}


def _load(cfg: DataConfig, wanted: Sequence[str], check: bool) -> Loaded:
    volume = load_mni_tissue(cfg.root or None, cfg.downsample)
    subsets = tissue_demo_split(volume, cfg.split_fractions[1], cfg.split_fractions[2])
    names = {name: [f"{v.case_id} slices {slab_name(v, volume)}" for v in vols]
             for name, vols in subsets.items()}
    return Loaded({name: subsets[name] for name in wanted}, Split(**names))


register_format("mni-tissue", DataFormat(_load, lambda cfg: list(TISSUE_CLASSES),
                                         head_zscore_record))
