"""Demo data: the Colin27 T1 MRI with the AAL atlas grouped into 10 anatomical classes.

Files (Debian's ``mricron-data``, ``/usr/share/mricron/templates/``):

* ``ch2.nii.gz``: Colin27 single-subject T1 (181 x 217 x 181, 1 mm, uint8 with skull).
* ``aal.nii.gz``: AAL atlas (116 regions) on the same grid.
* ``aal.nii.txt``: one ``value name code`` line per AAL region.

The 116 regions are grouped by :data:`AAL_GROUPS` (an explicit table; the grouping follows
AAL's own lobe ordering, e.g. fusiform with the occipital block, and puts the central
regions in their own sensorimotor class). There is one subject only: the demo trains on the
left hemisphere and tests on the right (:func:`atlas_demo_split`; the ``atlas-demo`` data
format, registered here), so no test voxel is seen in
training, but both share the subject, scanner and contrast.

Example (synthetic label, no files needed):
    >>> import numpy as np
    >>> label = np.zeros((4, 4, 40), np.int64); label[..., 5:35] = 1
    >>> foreground_slice_range(label)
    (5, 35)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from morse.config import DataConfig
from morse.errors import DataError

from .formats import DataFormat, Loaded, TrainVolumes, register_format
from .intensity import foreground_stats, make_record, normalize_intensity, resolve_intensity
from .nifti import grid_problems, read_nifti
from .split import Split
from .validate import checked_label
from .volume import Volume

__all__ = [
    "DEFAULT_TEMPLATE_DIR",
    "AAL_GROUPS",
    "ATLAS_CLASSES",
    "read_aal_table",
    "aal_class_lut",
    "group_aal_labels",
    "load_atlas_demo",
    "downsample_volume",
    "foreground_slice_range",
    "atlas_demo_split",
    "slab_name",
    "head_zscore_record",
]

DEFAULT_TEMPLATE_DIR = Path("/usr/share/mricron/templates")
_INSTALL = "install Debian's mricron-data (sudo apt-get install mricron-data)"


# fmt: off
AAL_GROUPS: dict[str, list[str]] = {
    "background": [],
    "frontal": [
        "Frontal_Sup_L", "Frontal_Sup_R",
        "Frontal_Sup_Orb_L", "Frontal_Sup_Orb_R",
        "Frontal_Mid_L", "Frontal_Mid_R",
        "Frontal_Mid_Orb_L", "Frontal_Mid_Orb_R",
        "Frontal_Inf_Oper_L", "Frontal_Inf_Oper_R",
        "Frontal_Inf_Tri_L", "Frontal_Inf_Tri_R",
        "Frontal_Inf_Orb_L", "Frontal_Inf_Orb_R",
        "Olfactory_L", "Olfactory_R",
        "Frontal_Sup_Medial_L", "Frontal_Sup_Medial_R",
        "Frontal_Med_Orb_L", "Frontal_Med_Orb_R",
        "Rectus_L", "Rectus_R",
    ],
    "sensorimotor": [
        "Precentral_L", "Precentral_R",
        "Postcentral_L", "Postcentral_R",
        "Rolandic_Oper_L", "Rolandic_Oper_R",
        "Supp_Motor_Area_L", "Supp_Motor_Area_R",
        "Paracentral_Lobule_L", "Paracentral_Lobule_R",
    ],
    "parietal": [
        "Parietal_Sup_L", "Parietal_Sup_R",
        "Parietal_Inf_L", "Parietal_Inf_R",
        "SupraMarginal_L", "SupraMarginal_R",
        "Angular_L", "Angular_R",
        "Precuneus_L", "Precuneus_R",
    ],
    "temporal": [
        "Heschl_L", "Heschl_R",
        "Temporal_Sup_L", "Temporal_Sup_R",
        "Temporal_Pole_Sup_L", "Temporal_Pole_Sup_R",
        "Temporal_Mid_L", "Temporal_Mid_R",
        "Temporal_Pole_Mid_L", "Temporal_Pole_Mid_R",
        "Temporal_Inf_L", "Temporal_Inf_R",
    ],
    "occipital": [
        "Calcarine_L", "Calcarine_R",
        "Cuneus_L", "Cuneus_R",
        "Lingual_L", "Lingual_R",
        "Occipital_Sup_L", "Occipital_Sup_R",
        "Occipital_Mid_L", "Occipital_Mid_R",
        "Occipital_Inf_L", "Occipital_Inf_R",
        "Fusiform_L", "Fusiform_R",
    ],
    "limbic": [
        "Cingulum_Ant_L", "Cingulum_Ant_R",
        "Cingulum_Mid_L", "Cingulum_Mid_R",
        "Cingulum_Post_L", "Cingulum_Post_R",
        "Hippocampus_L", "Hippocampus_R",
        "ParaHippocampal_L", "ParaHippocampal_R",
        "Amygdala_L", "Amygdala_R",
    ],
    "insula": [
        "Insula_L", "Insula_R",
    ],
    "deep_grey": [
        "Caudate_L", "Caudate_R",
        "Putamen_L", "Putamen_R",
        "Pallidum_L", "Pallidum_R",
        "Thalamus_L", "Thalamus_R",
    ],
    "cerebellum": [
        "Cerebelum_Crus1_L", "Cerebelum_Crus1_R",
        "Cerebelum_Crus2_L", "Cerebelum_Crus2_R",
        "Cerebelum_3_L", "Cerebelum_3_R",
        "Cerebelum_4_5_L", "Cerebelum_4_5_R",
        "Cerebelum_6_L", "Cerebelum_6_R",
        "Cerebelum_7b_L", "Cerebelum_7b_R",
        "Cerebelum_8_L", "Cerebelum_8_R",
        "Cerebelum_9_L", "Cerebelum_9_R",
        "Cerebelum_10_L", "Cerebelum_10_R",
    ],
    "vermis": [
        "Vermis_1_2",
        "Vermis_3",
        "Vermis_4_5",
        "Vermis_6",
        "Vermis_7",
        "Vermis_8",
        "Vermis_9",
        "Vermis_10",
    ],
}
# fmt: on
"""Class name -> AAL region names (spelled as in ``aal.nii.txt``); class value = dict order."""

ATLAS_CLASSES: tuple[str, ...] = tuple(AAL_GROUPS)
"""Class names by label value (0 background ... 10 vermis)."""


def _missing(path: Path) -> DataError:
    return DataError(f"{path}: not found; {_INSTALL}")


def read_aal_table(path: str | Path) -> dict[int, str]:
    """AAL value -> region name from ``aal.nii.txt`` (lines ``value name code``)."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    table: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or not fields[0].isdigit():
            raise DataError(f"{path}: line {number} {line!r} is not 'value name code'; fix it")
        table[int(fields[0])] = fields[1]
    return table


def aal_class_lut(table: dict[int, str], path: str | Path = "aal.nii.txt") -> np.ndarray:
    """Lookup table (max value + 1,) int64 mapping AAL values to :data:`ATLAS_CLASSES` indices.

    Raises:
        DataError: a region of the table is in no group, or a grouped name is not in the table.

    >>> aal_class_lut({1: "Precentral_L", 2: "Vermis_3"}).tolist()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    morse.errors.DataError: aal.nii.txt: ... not in the AAL table; ...
    """
    class_of = {name: i for i, members in enumerate(AAL_GROUPS.values()) for name in members}
    unassigned = sorted(name for name in table.values() if name not in class_of)
    if unassigned:
        raise DataError(
            f"{path}: regions {unassigned} are in no class of AAL_GROUPS; add them to the table"
        )
    absent = sorted(set(class_of) - set(table.values()))
    if absent:
        raise DataError(
            f"{path}: grouped regions {absent} are not in the AAL table; fix AAL_GROUPS"
        )
    lut = np.zeros(max(table) + 1, dtype=np.int64)
    for value, name in table.items():
        lut[value] = class_of[name]
    return lut


def group_aal_labels(
    aal: np.ndarray, lut: np.ndarray, path: str | Path = "aal.nii.gz"
) -> np.ndarray:
    """Map an AAL label array (*spatial) to class indices with ``lut`` (int64, same shape)."""
    aal = checked_label(aal, path, range(len(lut)), "not in aal.nii.txt",
                        "use the matching table")
    return lut[aal]


def downsample_volume(volume: Volume, factor: int) -> Volume:
    """Downsample by an integer factor: voxel j covers old voxels ``j*f .. j*f + f - 1``.

    The image is linearly interpolated at each block's centre (old index ``j*f + (f-1)/2``),
    the label takes the nearest voxel (``j*f + f//2``); the affine is updated so world
    coordinates are kept. Spatial shape becomes ``n // f`` per axis.

    >>> vol = Volume(np.arange(16.0).reshape(1, 4, 4, 1).repeat(2, -1), None)
    >>> small = downsample_volume(vol, 2)
    >>> small.image[0, :, :, 0].tolist(), small.spacing
    ([[2.5, 4.5], [10.5, 12.5]], (2.0, 2.0, 2.0))
    """
    from scipy.ndimage import map_coordinates

    if factor == 1:
        return volume
    if factor < 1:
        raise ValueError(f"downsample factor must be a positive integer, got {factor}")
    shape = tuple(max(n // factor, 1) for n in volume.spatial_shape)
    centre = (factor - 1) / 2.0
    grids = np.meshgrid(*[np.arange(n) * factor + centre for n in shape], indexing="ij")
    coords = np.stack(grids)
    image = np.stack(
        [map_coordinates(c, coords, order=1, mode="nearest") for c in volume.image]
    ).astype(np.float32)
    label = None
    if volume.label is not None:
        index = tuple(
            np.minimum(np.arange(n) * factor + factor // 2, m - 1)
            for n, m in zip(shape, volume.spatial_shape, strict=True)
        )
        label = volume.label[np.ix_(*index)]
    affine = volume.affine.copy()
    k = min(volume.spatial_dims, 3)
    affine[:3, 3] = affine[:3, 3] + affine[:3, :k] @ np.full(k, centre)
    affine[:3, :k] = affine[:3, :k] * factor
    return replace(volume, image=image, label=label, affine=affine)


def load_atlas_demo(
    template_dir: str | Path = DEFAULT_TEMPLATE_DIR,
    downsample: int = 1,
    normalize: bool = True,
) -> Volume:
    """Colin27 T1 with the grouped AAL labels.

    Args:
        template_dir: folder with ``ch2.nii.gz``, ``aal.nii.gz`` and ``aal.nii.txt``.
        downsample: integer factor (see :func:`downsample_volume`); 1 keeps 181x217x181.
        normalize: z-score the image over the head (nonzero voxels; background stays 0) so
            the statistics do not depend on the labels; False keeps the raw 0..255 values.

    Returns:
        Volume with image (1, X, Y, Z) float32, label (X, Y, Z) int64 in
        ``0..len(ATLAS_CLASSES) - 1``, case_id ``"colin27"``.

    Raises:
        DataError: a file is missing (install ``mricron-data``) or the grids differ.
    """
    template_dir = Path(template_dir)
    paths = {n: template_dir / n for n in ("ch2.nii.gz", "aal.nii.gz", "aal.nii.txt")}
    for path in paths.values():
        if not path.is_file():
            raise _missing(path)
    lut = aal_class_lut(read_aal_table(paths["aal.nii.txt"]), paths["aal.nii.txt"])
    image, affine, _ = read_nifti(paths["ch2.nii.gz"])
    aal, aal_affine, _ = read_nifti(paths["aal.nii.gz"])
    grid = grid_problems(aal.shape, aal_affine, image.shape, affine, "ch2.nii.gz",
                         fix="use the files of the same mricron-data release")
    if grid:
        raise DataError(f"{paths['aal.nii.gz']}: {grid[0]}")
    image = image.astype(np.float32)
    if normalize:
        image = normalize_intensity(image[None], "zscore")[0]
    label = group_aal_labels(aal, lut, paths["aal.nii.gz"])
    volume = Volume(image[None], label, affine, "colin27", str(paths["ch2.nii.gz"]))
    return downsample_volume(volume, downsample)


def foreground_slice_range(label: np.ndarray, axis: int = -1) -> tuple[int, int]:
    """``(start, stop)`` of the slices along ``axis`` holding any foreground (label > 0).

    Raises:
        DataError: the label has no foreground.
    """
    label = np.asarray(label)
    axis = axis % label.ndim
    other = tuple(i for i in range(label.ndim) if i != axis)
    present = np.flatnonzero(np.any(label > 0, axis=other))
    if present.size == 0:
        raise DataError("label: no foreground voxel; cannot place slabs on an empty label")
    return int(present[0]), int(present[-1]) + 1


def atlas_demo_split(volume: Volume, val_fraction: float = 0.1, gap: int = 2) -> dict:
    """The demo's split of one brain: train on the left hemisphere, test on the right one.

    The right hemisphere (past the midline, x > 0 in world coordinates, ``gap`` voxels away) is
    the test set: its voxels are never seen in training, yet every class appears in it, mirrored
    from the left (training flips the slices). Validation is an axial slab of the left
    hemisphere at 45% of the brain's height, where every class appears too; training takes the
    rest of the left hemisphere, ``gap`` slices away from it.

    Returns:
        ``{"train": [Volume, Volume], "val": [Volume], "test": [Volume]}``.
    """
    to_voxel = np.linalg.inv(volume.affine)
    midline = int(round((to_voxel @ np.array([0.0, 0.0, 0.0, 1.0]))[0]))
    x_start, x_stop = foreground_slice_range(volume.label, axis=0)
    left = volume.slab(x_start, midline - gap, axis=0)
    right = volume.slab(midline + gap, x_stop, axis=0)
    right.case_id, left.case_id = f"{volume.case_id}-right", f"{volume.case_id}-left"
    z_start, z_stop = foreground_slice_range(left.label)
    height = z_stop - z_start
    val_size = max(1, round(val_fraction * height))
    val_start = z_start + round(0.45 * height) - val_size // 2
    return {
        "train": [
            left.slab(z_start, val_start - gap),
            left.slab(val_start + val_size + gap, z_stop),
        ],
        "val": [left.slab(val_start, val_start + val_size)],
        "test": [right],
    }


def _load(cfg: DataConfig, wanted: Sequence[str], check: bool) -> Loaded:
    volume = load_atlas_demo(cfg.root, cfg.downsample, normalize=False)
    subsets = atlas_demo_split(volume, cfg.split_fractions[1])
    names = {name: [f"{v.case_id} slices {slab_name(v, volume)}" for v in vols]
             for name, vols in subsets.items()}
    return Loaded({name: subsets[name] for name in wanted}, Split(**names))


def slab_name(part: Volume, whole: Volume) -> str:
    """Where a slab lies in the whole volume: ``x a:b, z c:d`` (voxel indices)."""
    start = np.rint(np.linalg.solve(whole.affine, part.affine[:, 3])[:3]).astype(int)
    axes = [f"{'xyz'[a]} {start[a]}:{start[a] + n}" for a, n in enumerate(part.spatial_shape)
            if n != whole.spatial_shape[a]]
    return ", ".join(axes)


def head_zscore_record(cfg: DataConfig, train: TrainVolumes) -> dict:
    """T1 of one head: z-scored over the head (nonzero voxels) with the training subset's
    mean and std, the same for every subset and for predict."""
    if cfg.normalize not in ("auto", "zscore"):
        return make_record(resolve_intensity(cfg.normalize, ["T1"], train))
    stats = foreground_stats(train(), 0, nonzero=True)
    return make_record([{"scheme": "zscore", "mean": stats["mean"], "std": stats["std"]}])


register_format("atlas-demo", DataFormat(_load, lambda cfg: list(ATLAS_CLASSES),
                                             head_zscore_record))
