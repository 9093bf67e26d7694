"""NIfTI reading and writing that keeps the reference image's grid, affine and header; a
file's grid (shape, affine, orientation), grid comparison and label map reading.

Shapes: an image file is (*spatial) or (*spatial, C); a label map (H, W) or (X, Y, Z), a
trailing axis of length 1 dropped; affines are (4, 4) voxel-to-world in mm.

Example (round trip of an oblique, anisotropic grid):
    >>> import tempfile, numpy as np, nibabel as nib
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> affine = np.diag([0.7, 0.9, 3.0, 1.0]); affine[0, 1] = 0.2
    >>> nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), affine), d / "img.nii.gz")
    >>> out = write_label_like(d / "seg.nii.gz", np.ones((4, 5, 6), int), d / "img.nii.gz")
    >>> arr, aff, hdr = read_nifti(out)
    >>> arr.shape, arr.dtype, bool(np.allclose(aff, affine))
    ((4, 5, 6), dtype('uint8'), True)
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes

from morse.errors import DataError
from morse.io import atomic_open

from .validate import checked_label, label_problem

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "CHANNEL_GRID_FIX",
    "UNORIENTED",
    "Grid",
    "LabelMap",
    "grid_problems",
    "image_grid",
    "is_oriented",
    "load_reference",
    "read_label_map",
    "read_nifti",
    "squeeze_last",
    "try_read_label_map",
    "try_read_nifti",
    "write_array_like",
    "write_label_like",
]

PathLike = str | Path

AFFINE_TOLERANCE_MM = 1e-3
"""How far two affines may differ (largest entry, mm) and still be one grid."""

CHANNEL_GRID_FIX = "all channels of a case must be on the same grid"

UNORIENTED = "no orientation in its header (qform_code and sform_code are 0)"

_MISSING = "file not found; check the path and that the file was copied"


def _unreadable(exc: Exception) -> str:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"cannot be read as NIfTI ({reason}); re-export or re-download the file"


def try_read_nifti(
    path: PathLike,
) -> tuple[tuple[np.ndarray, np.ndarray, nib.Nifti1Header] | None, str | None]:
    """Like :func:`read_nifti` but returns ``(result, None)`` or ``(None, problem)``.

    The problem text does not repeat the path (callers prefix it), e.g.
    ``"file not found; check the path and that the file was copied"``.
    """
    path = Path(path)
    if not path.is_file():
        return None, _MISSING
    try:
        img = nib.load(str(path))
        array = np.asarray(np.asanyarray(img.dataobj))
    except Exception as exc:  # nibabel raises many types for corrupt files
        return None, _unreadable(exc)
    return (array, np.asarray(img.affine, dtype=np.float64), img.header), None


def read_nifti(path: PathLike) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """Read a NIfTI file.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.

    Returns:
        ``(array, affine, header)``: the voxel array in nibabel order (scaling applied, so
        its dtype is the stored one unless ``scl_slope`` asks for float), the (4, 4) float64
        affine and the header.

    Raises:
        DataError: the file is missing or cannot be read as NIfTI.
    """
    result, problem = try_read_nifti(path)
    if result is None:
        raise DataError(f"{path}: {problem}")
    return result


def load_reference(reference: PathLike | nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """A NIfTI image object from a path or an already loaded nibabel image."""
    if isinstance(reference, nib.spatialimages.SpatialImage):
        return reference
    path = Path(reference)
    if not path.is_file():
        raise DataError(
            f"{path}: reference image not found; pass the image the map was predicted from"
        )
    try:
        return nib.load(str(path))
    except Exception as exc:
        raise DataError(f"{path}: reference cannot be read as NIfTI ({exc})") from exc


def _label_dtype(label: np.ndarray) -> type:
    lo, hi = (int(label.min()), int(label.max())) if label.size else (0, 0)
    if lo >= 0 and hi < 256:
        return np.uint8
    if -(2**15) <= lo and hi < 2**15:
        return np.int16
    return np.int32


def _write_like(
    out_path: PathLike,
    array: np.ndarray,
    reference: PathLike | nib.spatialimages.SpatialImage,
    dtype: type,
) -> Path:
    ref = load_reference(reference)
    spatial = tuple(ref.shape[:3]) if len(ref.shape) >= 3 else tuple(ref.shape)
    array = np.asarray(array)
    if len(spatial) == 2 and array.ndim >= 3 and array.shape[2] == 1:
        array = array[:, :, 0]  # an H x W scan was read as one slice; write it as it came
    if tuple(array.shape[: len(spatial)]) != spatial:
        raise DataError(
            f"{out_path}: array shape {array.shape} does not start with the reference's "
            f"spatial shape {spatial}; resample the map onto the reference grid first"
        )
    header = ref.header.copy()
    cls = nib.Nifti2Image if isinstance(ref, nib.Nifti2Image) else nib.Nifti1Image
    img = cls(np.asarray(array).astype(dtype), ref.affine, header=header)
    img.header.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"], img.header["cal_max"] = 0.0, 0.0
    ref_header = ref.header if isinstance(ref.header, nib.Nifti1Header) else None
    if ref_header is not None:
        img.set_qform(ref.get_qform(), code=int(ref_header["qform_code"]))
        img.set_sform(ref.get_sform(), code=int(ref_header["sform_code"]))
    out_path = Path(out_path)
    save_nifti(img, out_path)
    return out_path


def save_nifti(img: nib.Nifti1Image, out_path: Path) -> None:
    """Write ``img`` atomically (:func:`morse.io.atomic_open`): a kill or a full disk leaves the
    previous file, never a truncated one under the final name. ``.gz`` is compressed as
    nibabel compresses it (level 1)."""
    with atomic_open(out_path) as handle:
        if out_path.name.endswith(".gz"):
            with gzip.GzipFile(fileobj=handle, mode="wb", compresslevel=1, mtime=0) as stream:
                img.to_file_map({"image": nib.FileHolder(fileobj=stream)})
        else:
            img.to_file_map({"image": nib.FileHolder(fileobj=handle)})


def write_label_like(
    out_path: PathLike,
    label: np.ndarray,
    reference: PathLike | nib.spatialimages.SpatialImage,
) -> Path:
    """Write a label map on the reference image's grid, keeping its affine and header.

    Args:
        out_path: destination (``.nii.gz``); parent folders are created.
        label: integer array (*spatial) with the reference's spatial shape.
        reference: path of, or loaded, image the labels belong to (may be 4D multi-channel).

    Returns:
        ``out_path`` as a Path. Stored as uint8 when values fit 0..255, else int16 (int32 when
        needed); qform and sform (with their codes) are copied from the reference.
    """
    label = checked_label(label, out_path)
    return _write_like(out_path, label, reference, _label_dtype(label))


def write_array_like(
    out_path: PathLike,
    array: np.ndarray,
    reference: PathLike | nib.spatialimages.SpatialImage,
    channel_axis: int | None = None,
    dtype: type = np.float32,
) -> Path:
    """Write a float map (probabilities, point maps, ...) on the reference image's grid.

    Args:
        out_path: destination file.
        array: (*spatial) or (*spatial, K) (NIfTI keeps extra axes last).
        reference: path of, or loaded, reference image.
        channel_axis: when given, this axis of ``array`` is moved last first (e.g. 0 for
            a (K, *spatial) probability map).
        dtype: stored dtype (float32 by default).

    Returns:
        ``out_path`` as a Path.
    """
    array = np.asarray(array)
    if channel_axis is not None:
        array = np.moveaxis(array, channel_axis, -1)
    return _write_like(out_path, array, reference, dtype)


def is_oriented(header: nib.Nifti1Header) -> bool:
    """Whether a header places its voxels in the world (qform_code or sform_code above 0)."""
    return any(int(header.get(key, 0)) for key in ("qform_code", "sform_code"))


@dataclass(frozen=True)
class Grid:
    """Where a file's voxels lie: its spatial shape, (4, 4) affine in mm and whether its header
    gives an orientation (:func:`is_oriented`)."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray
    oriented: bool


def image_grid(path: PathLike) -> Grid:
    """The grid of an image file from its header alone (a 4D file's first three axes).

    Raises:
        DataError: the file is missing or cannot be read as NIfTI.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {_MISSING}")
    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DataError(f"{path}: {_unreadable(exc)}") from exc
    shape = tuple(image.shape[:3]) if len(image.shape) == 4 else tuple(image.shape)
    return Grid(path, shape, np.asarray(image.affine, dtype=np.float64), is_oriented(image.header))


def grid_problems(
    shape: tuple[int, ...],
    affine: np.ndarray,
    other_shape: tuple[int, ...],
    other_affine: np.ndarray,
    other: str,
    tolerance: float = AFFINE_TOLERANCE_MM,
    fix: str = "image and label must be on the same grid",
) -> list[str]:
    """Compare two grids; return problems (shape, else spacing, else affine) as text.

    >>> grid_problems((4, 4, 3), np.eye(4), (4, 4, 4), np.eye(4), "its label x.nii.gz")
    ['shape (4, 4, 3) differs from its label x.nii.gz (4, 4, 4); image and label must be on the same grid']
    >>> grid_problems((4, 4, 3), np.eye(4), (4, 4, 3), np.diag([1, 1, 2, 1.0]), "channel 0")
    ['spacing (1.0, 1.0, 1.0) differs from channel 0 (1.0, 1.0, 2.0); image and label must be on the same grid']
    """  # noqa: E501
    if tuple(shape) != tuple(other_shape):
        return [f"shape {tuple(shape)} differs from {other} {tuple(other_shape)}; {fix}"]
    spacing, other_spacing = voxel_sizes(affine), voxel_sizes(other_affine)
    if np.max(np.abs(spacing - other_spacing)) > tolerance:
        a = tuple(round(float(v), 4) for v in spacing)
        b = tuple(round(float(v), 4) for v in other_spacing)
        return [f"spacing {a} differs from {other} {b}; {fix}"]
    diff = float(np.max(np.abs(affine - other_affine)))
    if diff > tolerance:
        return [
            f"affine (origin/direction) differs from {other} by up to {diff:.4g} mm "
            f"(tolerance {tolerance:g}); {fix}"
        ]
    return []


def squeeze_last(array: np.ndarray) -> np.ndarray:
    """(X, Y, Z, 1) -> (X, Y, Z); any other array as it is."""
    return array[..., 0] if array.ndim == 4 and array.shape[-1] == 1 else array


@dataclass
class LabelMap:
    """A label map read from a NIfTI file.

    Attributes:
        path: the file.
        label: int64 (*spatial), a trailing axis of length 1 dropped.
        affine: (4, 4) voxel-to-world matrix in mm (from pixdim when unoriented).
        oriented: False when the header's qform_code and sform_code are both 0.
    """

    path: Path
    label: np.ndarray
    affine: np.ndarray
    oriented: bool = True

    @property
    def grid(self) -> Grid:
        """The map's :class:`Grid`."""
        return Grid(self.path, tuple(self.label.shape), self.affine, self.oriented)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm per axis of ``label`` (ones beyond the third axis)."""
        sizes = [float(v) for v in voxel_sizes(self.affine)[: self.label.ndim]]
        return tuple(sizes + [1.0] * (self.label.ndim - len(sizes)))


def try_read_label_map(path: PathLike) -> tuple[LabelMap | None, str | None]:
    """Like :func:`read_label_map` without a class range: ``(map, None)`` or ``(None,
    problem)``, the problem text without the path (a missing or unreadable file, a shape that
    is not 2D or 3D, values that are not integers)."""
    result, problem = try_read_nifti(path)
    if result is None:
        return None, problem
    array, affine, header = result
    array = squeeze_last(array)
    if array.ndim not in (2, 3):
        return None, (f"shape {array.shape} is not a 2D or 3D label map; give one integer "
                      "label map per case")
    problem = label_problem(array)
    if problem:
        return None, problem
    return LabelMap(Path(path), array.astype(np.int64), affine, is_oriented(header)), None


def read_label_map(
    path: PathLike, num_classes: int | None = None,
    fix: str = "check the label map or pass the right --classes",
) -> LabelMap:
    """Read a label map; DataError naming the file when it holds no usable class labels.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        num_classes: K; labels must lie in ``0..K-1`` (None: any non-negative integer).
        fix: what the message tells to do about labels outside ``0..K-1``.
    """
    label_map, problem = try_read_label_map(path)
    if label_map is None:
        raise DataError(f"{path}: {problem}")
    allowed = range(num_classes) if num_classes is not None else None
    where = f"outside 0..{num_classes - 1} ({num_classes} classes)" if num_classes else ""
    label = checked_label(label_map.label, path, allowed, where, fix)
    if label.size and label.min() < 0:
        raise DataError(f"{path}: negative label {label.min()}; labels are class indices >= 0")
    return label_map
