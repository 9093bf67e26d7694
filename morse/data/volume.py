"""The in-memory case (:class:`Volume`) and the error for bad input data (:class:`DataError`).

Conventions shared by the whole project:

* ``image`` is float32 shaped ``(C, *spatial)`` in nibabel's array order (no reorientation).
* ``label`` is int64 shaped ``(*spatial)`` or ``None`` (unlabelled case).
* ``affine`` is the (4, 4) float64 voxel-to-world matrix (mm).
* 2D models work on slices along the LAST spatial axis: slice ``k`` is ``image[..., k]``.

Example:
    >>> import numpy as np
    >>> vol = Volume(np.zeros((1, 4, 5, 6)), np.zeros((4, 5, 6)), np.diag([0.5, 0.5, 3.0, 1.0]))
    >>> vol.spatial_dims, vol.num_channels, vol.spacing
    (3, 1, (0.5, 0.5, 3.0))
    >>> vol.image.dtype, vol.label.dtype
    (dtype('float32'), dtype('int64'))
    >>> sub = vol.slab(2, 4)
    >>> sub.image.shape, float(sub.affine[2, 3])
    ((1, 4, 5, 2), 6.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nibabel.affines import voxel_sizes

from morse.errors import DataError

__all__ = ["Volume", "display_path"]



def display_path(path: str | Path, root: str | Path | None = None) -> str:
    """``path`` relative to ``root`` when it lies under it, else as given (for messages).

    >>> display_path("/data/Task01/imagesTr/a_0000.nii.gz", "/data/Task01")
    'imagesTr/a_0000.nii.gz'
    >>> display_path("/elsewhere/x.nii.gz", "/data/Task01")
    '/elsewhere/x.nii.gz'
    """
    path = Path(path)
    if root is not None:
        try:
            return path.relative_to(Path(root)).as_posix()
        except ValueError:
            pass
    return str(path)


@dataclass
class Volume:
    """One case in memory.

    Attributes:
        image: float32 array (C, *spatial), nibabel array order.
        label: int64 array (*spatial) or None.
        affine: float64 (4, 4) voxel-to-world matrix in mm.
        case_id: case identifier.
        source: file the case was read from (for messages).
        spacing_known: False when the file carries no voxel size (e.g. Synapse and ACDC
            preprocessed files without a user-given spacing): the affine is then the identity
            and distances are in voxels, not mm.
    """

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    case_id: str = "case"
    source: str = "<memory>"
    spacing_known: bool = True

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.image.ndim < 2:
            raise DataError(
                f"{self.source}: image has shape {self.image.shape}; "
                "expected (C, *spatial) with at least one spatial axis"
            )
        if self.affine.shape != (4, 4):
            raise DataError(
                f"{self.source}: affine has shape {self.affine.shape}; expected a (4, 4) matrix"
            )
        if self.label is not None:
            label = np.asarray(self.label)
            if label.shape != self.image.shape[1:]:
                raise DataError(
                    f"{self.source}: label shape {label.shape} differs from the image's spatial "
                    f"shape {self.image.shape[1:]}; image and label must be on the same grid"
                )
            self.label = label.astype(np.int64, copy=False)

    @property
    def spatial_dims(self) -> int:
        """Number of spatial axes (``image.ndim - 1``)."""
        return self.image.ndim - 1

    @property
    def num_channels(self) -> int:
        """Number of image channels C."""
        return self.image.shape[0]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The spatial shape ``image.shape[1:]``."""
        return tuple(self.image.shape[1:])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm per spatial axis (nibabel's ``voxel_sizes`` of the affine)."""
        n = min(self.spatial_dims, 3)
        sizes = voxel_sizes(self.affine)[:n]
        return tuple(float(v) for v in sizes) + (1.0,) * (self.spatial_dims - n)

    def slab(self, start: int, stop: int, axis: int = -1) -> Volume:
        """The sub-volume of slices ``start:stop`` along a spatial axis (default the last),
        affine shifted so that every kept voxel keeps its world position.

        Args:
            start: first slice kept.
            stop: one past the last slice kept.
            axis: spatial axis (0-based, negative counts from the last).

        Returns:
            A new Volume with that axis cut to ``stop - start``.
        """
        axis = axis % self.spatial_dims
        depth = self.image.shape[1 + axis]
        if not 0 <= start < stop <= depth:
            raise DataError(
                f"{self.source}: slab {start}:{stop} lies outside the {depth} slices of axis "
                f"{axis}; pick 0 <= start < stop <= number of slices"
            )
        affine = self.affine.copy()
        if axis < 3:
            affine[:3, 3] = affine[:3, 3] + affine[:3, axis] * start
        index = (slice(None),) * axis + (slice(start, stop),)
        label = None if self.label is None else self.label[index].copy()
        return Volume(
            image=self.image[(slice(None), *index)].copy(),
            label=label,
            affine=affine,
            case_id=self.case_id,
            source=self.source,
            spacing_known=self.spacing_known,
        )
