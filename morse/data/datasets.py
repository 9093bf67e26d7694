"""Torch datasets fed by a list of :class:`~morse.data.volume.Volume`.

* :class:`SliceDataset`: every z-slice (``image[..., k]``) as a 2D sample, optionally resized
  and lightly augmented (flips, 90-degree and small rotations; labels always nearest).
* :class:`PatchDataset`: random 3D patches, foreground-weighted with MONAI's
  ``RandCropByPosNegLabeld`` (volumes smaller than the patch are padded first).

Randomness is a pure function of ``(seed, epoch, index)``: the same item is identical whatever
the worker, the shuffling or the number of workers. Call ``set_epoch(e)`` before each epoch
(on the main process; workers receive the updated copy when they start) to vary it.

Example:
    >>> import numpy as np
    >>> from morse.data.volume import Volume
    >>> vol = Volume(np.random.rand(1, 8, 8, 3), np.ones((8, 8, 3)), case_id="a")
    >>> ds = SliceDataset([vol], slice_size=(16, 16))
    >>> item = ds[2]
    >>> len(ds), item["image"].shape, item["label"].shape, item["label"].dtype, item["slice"]
    (3, torch.Size([1, 16, 16]), torch.Size([1, 16, 16]), torch.int64, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from morse.errors import DataError

from .intensity import no_meta, normalize_volume
from .volume import Volume

__all__ = ["item_seed", "SliceDataset", "PatchDataset"]


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 31-bit seed that depends only on ``(seed, epoch, index)``.

    >>> item_seed(0, 0, 1) == item_seed(0, 0, 1) != item_seed(0, 1, 1)
    True
    """
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0] >> 1)


def _plain(x: Any) -> torch.Tensor:
    """A plain torch.Tensor from a MONAI MetaTensor / tensor / array."""
    if hasattr(x, "as_tensor"):
        return x.as_tensor()
    return torch.as_tensor(x)


def _check_labels(volumes: Sequence[Volume], what: str) -> bool:
    labelled = [v.label is not None for v in volumes]
    if any(labelled) and not all(labelled):
        missing = [v.case_id for v in volumes if v.label is None]
        raise DataError(f"{what}: cases {missing} have no label while others do; mix not allowed")
    return bool(labelled) and all(labelled)


class SliceDataset(Dataset):
    """2D samples: every slice along the last spatial axis of every volume.

    Args:
        volumes: Volumes with image (C, H, W, D) (a (C, H, W) image counts as one slice).
        slice_size: resize each slice to (H, W) (bilinear image, nearest label); None keeps it.
        augment: random flips, 90-degree rotations (square slices only) and rotations within
            +-15 degrees (MONAI transforms; labels with nearest interpolation).
        seed: base seed for augmentation and empty-slice selection.
        foreground_only: keep only slices with foreground, plus ``empty_fraction`` of the others.
        empty_fraction: fraction of empty slices kept when ``foreground_only``.
        normalize: per-volume intensity scheme applied once per volume
            (see :func:`morse.data.intensity.normalize_intensity`).

    Items:
        ``{"image": float32 (C, H, W), "label": int64 (1, H, W), "case_id": str,
        "slice": int}`` (no ``"label"`` when the volumes are unlabelled).
    """

    def __init__(
        self,
        volumes: Sequence[Volume],
        slice_size: Sequence[int] | None = None,
        augment: bool = False,
        seed: int = 0,
        foreground_only: bool = False,
        empty_fraction: float = 0.0,
        normalize: str = "none",
    ) -> None:
        if not volumes:
            raise DataError("SliceDataset: no volumes given; check the split and the data root")
        if not 0.0 <= empty_fraction <= 1.0:
            raise ValueError(f"empty_fraction must be in [0, 1], got {empty_fraction}")
        self.volumes = [normalize_volume(v, normalize) for v in volumes]
        self.labelled = _check_labels(self.volumes, "SliceDataset")
        self.slice_size = tuple(int(s) for s in slice_size) if slice_size else None
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.index = self._build_index(foreground_only, empty_fraction)
        self._transforms = self._make_transforms() if augment else None

    def _build_index(self, foreground_only: bool, empty_fraction: float) -> list[tuple[int, int]]:
        index = []
        for i, vol in enumerate(self.volumes):
            if vol.spatial_dims not in (2, 3):
                raise DataError(
                    f"{vol.source}: SliceDataset needs 2D or 3D images, got {vol.image.shape}"
                )
            depth = vol.image.shape[-1] if vol.spatial_dims == 3 else 1
            keep = list(range(depth))
            if foreground_only and vol.label is not None and vol.spatial_dims == 3:
                has_fg = np.any(vol.label > 0, axis=(0, 1))
                empty = np.flatnonzero(~has_fg)
                n_keep = int(round(empty_fraction * len(empty)))
                rng = np.random.default_rng([self.seed, i])
                kept_empty = set(rng.choice(empty, size=n_keep, replace=False).tolist())
                keep = [k for k in keep if has_fg[k] or k in kept_empty]
            index.extend((i, k) for k in keep)
        return index

    @staticmethod
    def _make_transforms() -> tuple[Any, Any]:
        from monai.transforms import Compose, RandFlipd, RandRotate90d, RandRotated

        keys = ("image", "label")
        flips_rotation = Compose(
            [
                RandFlipd(keys, prob=0.5, spatial_axis=0),
                RandFlipd(keys, prob=0.5, spatial_axis=1),
                RandRotated(
                    keys,
                    range_x=math.radians(15.0),
                    prob=0.3,
                    mode=("bilinear", "nearest"),
                    padding_mode="zeros",
                ),
            ]
        )
        return flips_rotation, RandRotate90d(keys, prob=0.5, max_k=3)

    def set_epoch(self, epoch: int) -> None:
        """Vary the augmentation across epochs (the result stays a function of the seed)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def _slice(self, vol: Volume, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        image = vol.image[..., k] if vol.spatial_dims == 3 else vol.image
        image_t = torch.from_numpy(np.ascontiguousarray(image))
        label_t = None
        if vol.label is not None:
            label = vol.label[..., k] if vol.spatial_dims == 3 else vol.label
            label_t = torch.from_numpy(np.ascontiguousarray(label))[None]
        if self.slice_size is not None and tuple(image_t.shape[1:]) != self.slice_size:
            image_t = F.interpolate(
                image_t[None], size=self.slice_size, mode="bilinear", align_corners=False
            )[0]
            if label_t is not None:
                label_t = F.interpolate(
                    label_t[None].float(), size=self.slice_size, mode="nearest-exact"
                )[0].long()
        return image_t, label_t

    def _augment(
        self, image: torch.Tensor, label: torch.Tensor | None, index: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert self._transforms is not None
        flips_rotation, rot90 = self._transforms
        state = np.random.RandomState(item_seed(self.seed, self.epoch, index))
        flips_rotation.set_random_state(seed=int(state.randint(2**31 - 1)))
        rot90.set_random_state(seed=int(state.randint(2**31 - 1)))
        lab = label if label is not None else torch.zeros((1, *image.shape[1:]))
        data = {"image": image, "label": lab.float()}
        with no_meta():
            if image.shape[-1] == image.shape[-2]:
                data = rot90(data)
            data = flips_rotation(data)
        image = _plain(data["image"]).float().contiguous()
        out_label = _plain(data["label"]).round().long().contiguous()
        return image, out_label if label is not None else None

    def __getitem__(self, index: int) -> dict[str, Any]:
        v, k = self.index[index]
        vol = self.volumes[v]
        image, label = self._slice(vol, k)
        if self.augment:
            image, label = self._augment(image, label, index)
        item: dict[str, Any] = {"image": image.float(), "case_id": vol.case_id, "slice": k}
        if label is not None:
            item["label"] = label.long()
        return item


class PatchDataset(Dataset):
    """Random patches, foreground-weighted (MONAI ``RandCropByPosNegLabeld``).

    Args:
        volumes: labelled Volumes with image (C, *spatial).
        patch_size: patch spatial size; smaller volumes are zero-padded first.
        samples_per_volume: patches drawn per volume per epoch (``len = volumes * this``).
        pos_ratio: probability that a patch is centred on foreground.
        seed: base seed.
        augment: random flips along every spatial axis.
        normalize: intensity scheme applied once per volume.

    Items:
        ``{"image": float32 (C, *patch), "label": int64 (1, *patch), "case_id": str}``.

    Example:
        >>> vol = Volume(np.random.rand(1, 6, 6, 4), np.ones((6, 6, 4)), case_id="a")
        >>> item = PatchDataset([vol], (8, 8, 8), samples_per_volume=2)[1]
        >>> item["image"].shape, item["label"].shape, item["label"].dtype
        (torch.Size([1, 8, 8, 8]), torch.Size([1, 8, 8, 8]), torch.int64)
    """

    def __init__(
        self,
        volumes: Sequence[Volume],
        patch_size: Sequence[int],
        samples_per_volume: int = 4,
        pos_ratio: float = 0.67,
        seed: int = 0,
        augment: bool = False,
        normalize: str = "none",
    ) -> None:
        if not volumes:
            raise DataError("PatchDataset: no volumes given; check the split and the data root")
        if not 0.0 <= pos_ratio <= 1.0:
            raise ValueError(f"pos_ratio must be in [0, 1], got {pos_ratio}")
        if samples_per_volume < 1:
            raise ValueError(f"samples_per_volume must be >= 1, got {samples_per_volume}")
        self.volumes = [normalize_volume(v, normalize) for v in volumes]
        if not _check_labels(self.volumes, "PatchDataset"):
            raise DataError("PatchDataset: volumes have no labels; patch sampling needs labels")
        self.patch_size = tuple(int(s) for s in patch_size)
        for vol in self.volumes:
            if vol.spatial_dims != len(self.patch_size):
                raise DataError(
                    f"{vol.source}: image {vol.image.shape} has {vol.spatial_dims} spatial axes "
                    f"but patch_size is {self.patch_size}; give one size per spatial axis"
                )
        self.samples_per_volume = samples_per_volume
        self.seed = seed
        self.epoch = 0
        self.transform = self._make_transform(pos_ratio, augment)

    def _make_transform(self, pos_ratio: float, augment: bool) -> Any:
        from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd, SpatialPadd

        keys = ("image", "label")
        steps = [
            SpatialPadd(keys, spatial_size=self.patch_size, mode="constant"),
            RandCropByPosNegLabeld(
                keys,
                label_key="label",
                spatial_size=self.patch_size,
                pos=pos_ratio,
                neg=1.0 - pos_ratio,
                num_samples=1,
            ),
        ]
        if augment:
            steps += [
                RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(len(self.patch_size))
            ]
        return Compose(steps)

    def set_epoch(self, epoch: int) -> None:
        """Draw other patches in the next epoch (still a function of the seed)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.volumes) * self.samples_per_volume

    def __getitem__(self, index: int) -> dict[str, Any]:
        vol = self.volumes[index // self.samples_per_volume]
        self.transform.set_random_state(seed=item_seed(self.seed, self.epoch, index))
        data = {"image": torch.from_numpy(vol.image), "label": torch.from_numpy(vol.label[None])}
        with no_meta():
            out = self.transform(data)
        out = out[0] if isinstance(out, list) else out
        return {
            "image": _plain(out["image"]).float().contiguous(),
            "label": _plain(out["label"]).long().contiguous(),
            "case_id": vol.case_id,
        }
