"""MORSE's loss: 0.5 (CE + Dice) on the coarse logits plus w(t) times the point cross-entropy."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from morse.config import LossConfig, choices
from morse.model.module import MorseOutput
from morse.renderer.points import point_sample

__all__ = [
    "DICE_POOLING", "MorseLoss", "POINT_WEIGHT_SCHEDULES", "build_loss", "point_loss",
    "point_weight",
]


def _constant(weight: float, step: int, total_steps: int) -> float:
    return weight


def _delayed_ramp(weight: float, step: int, total_steps: int) -> float:
    # The authors' 2D schedule: nothing for the first half, then linear up to `weight` at the
    # end; with weight 0.5 this is exactly their (t - T/2) / T.
    half = total_steps / 2
    return weight * min(max((step - half) / max(half, 1e-12), 0.0), 1.0)


# Under the names loss.schedule allows (morse.config.choices); a test checks that they agree.
POINT_WEIGHT_SCHEDULES: dict[str, Callable[[float, int, int], float]] = {
    "constant": _constant,
    "delayed-ramp": _delayed_ramp,
}
DEFAULT_WEIGHTS = {"constant": 1.0, "delayed-ramp": 0.5}
DICE_POOLING = choices.DICE_POOLING.names  # loss.dice, declared by the config


def point_weight(schedule: str, weight: float, step: int, total_steps: int) -> float:
    """w(t) of a named schedule.

    >>> point_weight("delayed-ramp", 0.5, 750, 1000)
    0.25
    >>> point_weight("constant", 1.0, 0, 1000)
    1.0
    """
    if schedule not in POINT_WEIGHT_SCHEDULES:
        raise ValueError(
            f"unknown point-loss schedule {schedule!r}; choose one of "
            f"{sorted(POINT_WEIGHT_SCHEDULES)}"
        )
    return POINT_WEIGHT_SCHEDULES[schedule](weight, step, total_steps)


def point_loss(logits: torch.Tensor, coords: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of point logits against the label read (nearest) at the points.

    Args:
        logits: (B, K, P) point logits (e.g. ``MorseRenderer``'s).
        coords: (B, P, D) the points in [0, 1].
        label: (B, 1, *S) or (B, *S) integer class indices.

    >>> round(point_loss(torch.zeros(1, 2, 5), torch.rand(1, 5, 2), torch.zeros(1, 4, 4)).item(), 4)
    0.6931
    """
    if label.dim() == coords.shape[-1] + 1:
        label = label.unsqueeze(1)
    point_labels = point_sample(label.float(), coords, mode="nearest")
    return F.cross_entropy(logits.float(), point_labels[:, 0].long())


class MorseLoss(nn.Module):
    """``L = coarse_weight * (CE + Dice)(coarse, y) + w(t) * CE(point_logits, y(points))``.

    Args:
        num_classes: K.
        schedule: "constant" (the authors' TransUNet and 3D scripts) or "delayed-ramp" (their
            2D UNet script).
        point_weight: final/constant w; default 1.0 for "constant" and 0.5 for "delayed-ramp".
        coarse_weight: weight of (CE + Dice) on the coarse logits (paper: 0.5).
        dice: how the coarse Dice pools: "batch" (one Dice per class over the whole batch, as
            the authors' code does) or "sample" (MONAI's default: per image and class, then
            averaged, so a class absent from a slice adds a loss near 1 with almost no
            gradient).

    Called as ``loss(output, label, step, total_steps)`` with ``label`` (B, 1, *S) or
    (B, *S) integers in [0, K); returns the scalar loss and a dict of its parts (floats).
    """

    def __init__(
        self,
        num_classes: int,
        schedule: str = "constant",
        point_weight: float | None = None,
        coarse_weight: float = 0.5,
        dice: str = "batch",
    ) -> None:
        super().__init__()
        if schedule not in POINT_WEIGHT_SCHEDULES:
            raise ValueError(
                f"unknown point-loss schedule {schedule!r}; choose one of "
                f"{sorted(POINT_WEIGHT_SCHEDULES)}"
            )
        self.num_classes = num_classes
        self.schedule = schedule
        self.weight = DEFAULT_WEIGHTS[schedule] if point_weight is None else point_weight
        self.coarse_weight = coarse_weight
        if dice not in DICE_POOLING:
            raise ValueError(f"dice must be one of {DICE_POOLING}, got {dice!r}")
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, batch=dice == "batch")

    def forward(
        self, output: MorseOutput, label: torch.Tensor, step: int = 0, total_steps: int = 1
    ) -> tuple[torch.Tensor, dict[str, float]]:
        label = self._check_label(label, output.coarse)
        coarse = output.coarse.float()
        ce = F.cross_entropy(coarse, label[:, 0])
        dice = self.dice(coarse, label)
        loss = self.coarse_weight * (ce + dice)
        parts = {"coarse_ce": ce.item(), "coarse_dice": dice.item()}
        if output.point_logits is not None and output.point_coords is not None:
            w = point_weight(self.schedule, self.weight, step, total_steps)
            point_ce = point_loss(output.point_logits, output.point_coords, label)
            loss = loss + w * point_ce
            parts.update(point_ce=point_ce.item(), point_weight=w)
        parts["loss"] = loss.item()
        return loss, parts

    def _check_label(self, label: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        if label.dim() == coarse.dim() - 1:
            label = label.unsqueeze(1)
        if label.shape[1] != 1 or label.shape[2:] != coarse.shape[2:]:
            raise ValueError(
                f"label shape {tuple(label.shape)} does not match the logits "
                f"{tuple(coarse.shape)}: expected (B, 1, {', '.join(map(str, coarse.shape[2:]))})"
            )
        if torch.is_floating_point(label) and not torch.equal(label, label.round()):
            raise ValueError("labels must hold integer class indices, found fractional values")
        low, high = int(label.min()), int(label.max())
        if low < 0 or high >= self.num_classes:
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}) but range over [{low}, {high}]; "
                "check num_classes or remap the label values"
            )
        return label.long()


def build_loss(cfg: LossConfig, num_classes: int) -> MorseLoss:
    """The loss a run's ``loss`` section describes, for ``num_classes`` classes (K)."""
    return MorseLoss(num_classes, cfg.schedule, cfg.point_weight, cfg.coarse_weight, cfg.dice)
