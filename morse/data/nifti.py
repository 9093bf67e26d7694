"""NIfTI reading and writing that keeps the reference image's grid, affine and header.

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

from pathlib import Path

import nibabel as nib
import numpy as np

from morse.errors import DataError

from .validate import checked_label

__all__ = ["read_nifti", "try_read_nifti", "load_reference", "write_label_like", "write_array_like"]

PathLike = str | Path


def try_read_nifti(
    path: PathLike,
) -> tuple[tuple[np.ndarray, np.ndarray, nib.Nifti1Header] | None, str | None]:
    """Like :func:`read_nifti` but returns ``(result, None)`` or ``(None, problem)``.

    The problem text does not repeat the path (callers prefix it), e.g.
    ``"file not found; check the path and that the file was copied"``.
    """
    path = Path(path)
    if not path.is_file():
        return None, "file not found; check the path and that the file was copied"
    try:
        img = nib.load(str(path))
        array = np.asarray(np.asanyarray(img.dataobj))
    except Exception as exc:  # nibabel raises many types for corrupt files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"cannot be read as NIfTI ({reason}); re-export or re-download the file"
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
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(out_path))
    return out_path


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
