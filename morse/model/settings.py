"""How whole volumes are segmented: one frozen record, read once from a run's config.

``predict_volume`` takes an :class:`InferenceConfig`; :meth:`InferenceConfig.from_config` is
the one place where a run's ``data``, ``train`` and ``eval`` sections become those settings,
for training's validation and for every prediction of a trained run alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from morse.config import Config

__all__ = ["InferenceConfig"]


@dataclass(frozen=True)
class InferenceConfig:
    """Where and how the network runs over a volume (what it returns is chosen per call).

    Attributes:
        device: where the network runs.
        precision: "fp32", "bf16" or "fp16" autocast on the device.
        slice_size: 2D: the (H, W) the model was trained on; slices are resized to it and the
            renderer renders back on the slice's own grid. None: pad to ``PAD_MULTIPLE``.
        slice_batch_size: 2D: slices per forward pass.
        patch_size: 3D: the sliding window size (None: the whole volume at once).
        sw_batch_size: 3D: windows per forward pass.
        overlap: 3D: overlap of neighbouring windows (MONAI's sliding window).
        sw_device: 3D: device of the stitching buffers (None: the CPU, which bounds the
            accelerator's memory by the windows; the network's device is faster).
        tta: flip test-time augmentation (``morse.model.tta``): the backbone's logits
            averaged over the 2^D mirrorings of each slice or window, then rendered.
    """

    device: torch.device | str = "cpu"
    precision: str = "fp32"
    slice_size: tuple[int, ...] | None = None
    slice_batch_size: int = 16
    patch_size: tuple[int, ...] | None = None
    sw_batch_size: int = 2
    overlap: float = 0.5
    sw_device: torch.device | str | None = None
    tta: bool = False

    def __post_init__(self) -> None:
        # sizes arrive as YAML lists; tuples keep the record hashable and comparable
        for name in ("slice_size", "patch_size"):
            object.__setattr__(self, name, _sizes(getattr(self, name)))

    @classmethod
    def from_config(cls, cfg: Config, device: torch.device | str = "cpu") -> InferenceConfig:
        """The settings of a run's config: sizes from ``data``, autocast from ``train``,
        batches, windows and TTA from ``eval``; the network on ``device``."""
        return cls(
            device=device, precision=cfg.train.precision, slice_size=cfg.data.slice_size,
            slice_batch_size=cfg.eval.slice_batch_size, patch_size=cfg.data.patch_size,
            sw_batch_size=cfg.eval.sw_batch_size, overlap=cfg.eval.overlap,
            sw_device=cfg.eval.sw_device, tta=cfg.eval.tta,
        )


def _sizes(sizes: Sequence[int] | None) -> tuple[int, ...] | None:
    """A size per axis as a tuple of ints (None stays None).

    >>> _sizes([96, 96, 32]), _sizes(None)
    ((96, 96, 32), None)
    """
    return None if sizes is None else tuple(int(n) for n in sizes)
