"""Orientation and spacing, nnU-Net-style: every case in one orientation (RAS) at one spacing.

A *geometry* is plain data, planned from the training cases and saved in the preprocessing
record so that prediction brings a new scan to the same grid::

    {"orientation": "RAS", "spacing": [s_R, s_A, s_S], "slice_axis": 2}

* ``spacing``: the target voxel size in mm along the R, A and S axes (by default the median of
  the training cases, as nnU-Net's planning chooses it).
* ``slice_axis``: 2D models slice across this RAS axis (by default the one with the largest
  target spacing, i.e. the lowest resolution; ties go to S, axial). It becomes the last
  array axis; 2D resampling is in plane only, so every case keeps its own slices. None: 3D.

The *network grid* of a scan is its array reoriented (axes permuted and flipped, which loses
nothing), then resized so that it spans the same field of view with cells of the target
spacing. Because the field of view is the same, a point at ``c`` in [0, 1]^3 of the scan's
reoriented grid is at ``c`` in the network grid too: the renderer can write on the scan's own
voxels directly (:func:`morse.model.volumes.predict_volume`'s ``output_shape``).

Example (an LPS scan at 0.5 x 0.5 x 3 mm, brought to 1 mm in plane for a 2D model):
    >>> import numpy as np
    >>> affine = np.diag([-0.5, -0.5, 3.0, 1.0])
    >>> scan = Volume(np.zeros((1, 64, 48, 10)), np.zeros((64, 48, 10)), affine)
    >>> geometry = plan_geometry([scan], target=[1.0, 1.0, 3.0], spatial_dims=2)
    >>> geometry
    {'orientation': 'RAS', 'spacing': [1.0, 1.0, 3.0], 'slice_axis': 2}
    >>> net = to_network(scan, geometry)
    >>> net.image.shape, tuple(round(s, 3) for s in net.spacing)
    ((1, 32, 24, 10), (1.0, 1.0, 3.0))
    >>> axes = network_axes(affine, geometry)
    >>> axes.perm, axes.flips, axes.shape((64, 48, 10))
    ((0, 1, 2), (True, True, False), (64, 48, 10))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from nibabel.orientations import io_orientation

from morse.errors import DataError
from morse.shapes import check_grid_size

from .volume import Volume

__all__ = ["AxisMap", "plan_geometry", "network_axes", "to_network", "check_geometry"]

ORIENTATION = "RAS"


@dataclass(frozen=True)
class AxisMap:
    """How a scan's array axes become the network's: network axis j is scan axis
    ``perm[j]``, reversed when ``flips[j]``. Lossless both ways.

    >>> axes = AxisMap((2, 0, 1), (False, True, False))
    >>> a = np.arange(24).reshape(2, 3, 4)
    >>> axes.shape(a.shape), np.array_equal(axes.inverse(axes.forward(a)), a)
    ((4, 2, 3), True)
    """

    perm: tuple[int, ...]
    flips: tuple[bool, ...]

    def shape(self, scan_shape: Sequence[int]) -> tuple[int, ...]:
        """The scan's spatial shape in network axis order."""
        return tuple(int(scan_shape[axis]) for axis in self.perm)

    def forward(self, array: np.ndarray, leading: int = 0) -> np.ndarray:
        """(*lead, *S_scan) -> (*lead, *S_net) (``leading`` axes kept, e.g. channels)."""
        moved = np.transpose(array, [*range(leading), *(leading + a for a in self.perm)])
        return _flip(moved, self.flips, leading)

    def inverse(self, array: np.ndarray, leading: int = 0) -> np.ndarray:
        """(*lead, *S_net) -> (*lead, *S_scan), undoing :meth:`forward`."""
        unflipped = _flip(array, self.flips, leading)
        order = np.argsort(self.perm)
        return np.ascontiguousarray(
            np.transpose(unflipped, [*range(leading), *(leading + int(a) for a in order)]))

    def affine(self, affine: np.ndarray, scan_shape: Sequence[int]) -> np.ndarray:
        """The voxel-to-world affine of the reoriented array (same world positions)."""
        index_map = np.zeros((4, 4))
        index_map[3, 3] = 1.0
        for net_axis, (axis, flip) in enumerate(zip(self.perm, self.flips)):
            index_map[axis, net_axis] = -1.0 if flip else 1.0
            index_map[axis, 3] = scan_shape[axis] - 1 if flip else 0.0
        return affine @ index_map


def _flip(array: np.ndarray, flips: Sequence[bool], leading: int) -> np.ndarray:
    axes = tuple(leading + axis for axis, flip in enumerate(flips) if flip)
    return np.flip(array, axes) if axes else array


def _ras_axes(affine: np.ndarray, source: str) -> AxisMap:
    """The axis map taking a scan's array to RAS (nibabel's closest canonical)."""
    try:
        orientation = io_orientation(affine)
    except Exception as error:  # nibabel raises for singular or non-finite affines
        raise DataError(f"{source}: its affine {affine.tolist()} gives no orientation "
                        f"({error}); fix the file's qform/sform") from error
    if np.isnan(orientation).any():
        raise DataError(f"{source}: its affine gives no orientation for every axis; fix the "
                        "file's qform/sform")
    perm, flips = [0, 0, 0], [False, False, False]
    for axis, (target, direction) in enumerate(orientation):
        perm[int(target)], flips[int(target)] = axis, bool(direction < 0)
    return AxisMap(tuple(perm), tuple(flips))


def network_axes(affine: np.ndarray, geometry: dict, source: str = "scan") -> AxisMap:
    """The axis map of a scan with this affine: to RAS, then the slice axis (2D) last."""
    ras = _ras_axes(affine, source)
    order = _network_order(geometry)
    return AxisMap(tuple(ras.perm[a] for a in order), tuple(ras.flips[a] for a in order))


def _network_order(geometry: dict) -> list[int]:
    """RAS axis of each network axis."""
    slice_axis = geometry.get("slice_axis")
    if slice_axis is None:
        return [0, 1, 2]
    return [a for a in range(3) if a != slice_axis] + [slice_axis]


def plan_geometry(
    volumes: Sequence[Volume],
    target: Sequence[float] | None = None,
    spatial_dims: int = 3,
    slice_axis: int | None = None,
) -> dict:
    """The geometry of a dataset, planned from its training cases.

    Args:
        volumes: the training cases (3 spatial axes, spacing known).
        target: spacing in mm along R, A, S; None: the median over ``volumes``.
        spatial_dims: 2 slices across ``slice_axis``; 3 keeps the volume.
        slice_axis: 2D: the RAS axis to slice across; None: the largest target spacing.
    """
    spacings = []
    for volume in volumes:
        check_geometry(volume)
        ras = _ras_axes(volume.affine, volume.source)
        spacings.append([volume.spacing[axis] for axis in ras.perm])
    if target is None:
        if not spacings:
            raise DataError("no training case to plan the target spacing from; set "
                            "data.target_spacing")
        target = np.median(np.array(spacings), axis=0).tolist()
    spacing = [round(float(s), 6) for s in target]
    if spatial_dims == 3:
        slice_axis = None
    elif slice_axis is None:
        slice_axis = max(range(3), key=lambda axis: (spacing[axis], axis))
    return {"orientation": ORIENTATION, "spacing": spacing, "slice_axis": slice_axis}


def check_geometry(volume: Volume) -> None:
    """Raise DataError unless the volume has three spatial axes and a real spacing."""
    if volume.spatial_dims != 3:
        raise DataError(f"{volume.source}: {volume.spatial_dims} spatial axes; resampling to "
                        "a target spacing needs 3 (store 2D images as H x W x 1)")
    if not volume.spacing_known:
        raise DataError(f"{volume.source}: no voxel size in the file, so it cannot be "
                        "resampled to a target spacing; set data.spacing or "
                        "data.target_spacing: null")


def to_network(volume: Volume, geometry: dict) -> Volume:
    """The volume on its network grid: reoriented to RAS (2D: slice axis last) and resized,
    over the same field of view, to the target spacing (2D: in plane only).

    The image is resized trilinearly (MONAI's ``Resize`` with anti-aliasing when it
    shrinks), the label by nearest cell centre; the affine follows, so every voxel keeps its
    world position.
    """
    check_geometry(volume)
    axes = network_axes(volume.affine, geometry, volume.source)
    image = np.ascontiguousarray(axes.forward(volume.image, leading=1))
    label = None if volume.label is None else np.ascontiguousarray(axes.forward(volume.label))
    affine = axes.affine(volume.affine, volume.spatial_shape)
    oriented = replace(volume, image=image, label=label, affine=affine)
    shape = _target_shape(oriented, geometry)
    if shape == oriented.spatial_shape:
        return oriented
    return _resized(oriented, shape)


def _target_shape(volume: Volume, geometry: dict) -> tuple[int, ...]:
    """Cells per network axis at the target spacing (2D: the slice axis unchanged)."""
    targets = [geometry["spacing"][axis] for axis in _network_order(geometry)]
    if geometry.get("slice_axis") is not None:
        targets[-1] = volume.spacing[-1]
    shape = tuple(max(1, round(n * s / t))
                  for n, s, t in zip(volume.spatial_shape, volume.spacing, targets))
    _check_resampling(volume, targets, shape)
    return shape


MAX_RESAMPLING = 16.0
"""The most a scan is stretched or shrunk along one axis; beyond it the voxel size in the file
(or the target spacing) is almost surely wrong, and the resampled scan could fill memory."""


def _check_resampling(volume: Volume, targets: list[float], shape: tuple[int, ...]) -> None:
    """Refuse a resampling that stretches or shrinks an axis more than ``MAX_RESAMPLING``
    times, or a resampled grid too large to hold, before any memory is taken."""
    fix = ("check the file's voxel size (NIfTI pixdim / affine) or data.target_spacing")
    for axis, (before, after) in enumerate(zip(volume.spatial_shape, shape)):
        factor = after / before
        if factor > MAX_RESAMPLING or factor < 1 / MAX_RESAMPLING:
            raise DataError(
                f"{volume.source}: voxel size {_mm(volume.spacing)} mm at the target spacing "
                f"{_mm(targets)} mm would resample network axis {axis} from {before} to {after} "
                f"cells ({factor:.3g}x, the limit is {MAX_RESAMPLING:g}x either way); {fix}"
            )
    check_grid_size(shape, str(volume.source), 4 * volume.num_channels, fix)


def _mm(sizes) -> str:
    return "[" + ", ".join(f"{float(s):.4g}" for s in sizes) + "]"


def _resized(volume: Volume, shape: tuple[int, ...]) -> Volume:
    """The volume resized to ``shape`` over the same field of view."""
    from monai.transforms import Resize

    from .intensity import no_meta

    with no_meta():
        image = Resize(shape, mode="trilinear", align_corners=False, anti_aliasing=True)(
            torch.as_tensor(volume.image))
        label = None
        if volume.label is not None:
            label = Resize(shape, mode="nearest-exact")(
                torch.as_tensor(volume.label[None].astype(np.float32)))[0]
    ratio = np.array(volume.spatial_shape, float) / np.array(shape, float)
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(ratio)
    index_map[:3, 3] = 0.5 * ratio - 0.5
    return replace(
        volume, image=np.asarray(image, dtype=np.float32),
        label=None if label is None else np.asarray(label).round().astype(np.int64),
        affine=volume.affine @ index_map,
    )
