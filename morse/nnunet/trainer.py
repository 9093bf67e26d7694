"""``nnUNetTrainerMORSE``: nnU-Net v2's trainer with MORSE's renderer on the planned U-Net.

Everything but the network and one loss term is nnU-Net's: plans, preprocessing, augmentation,
optimiser and learning-rate schedule, AMP, DDP, checkpoints, validation, sliding-window
prediction with mirroring. The network is ``MorseUNet`` (the planned U-Net, its decoder read at
every scale by ``MorseRenderer`` with ``RendererConfig``'s defaults); the loss is nnU-Net's
deep-supervision loss plus ``w(t)`` times the point cross-entropy, ``w`` following the project's
default schedule (``LossConfig``). In eval mode the network returns rendered logits, so nnU-Net's
validation, ``nnUNetv2_predict`` and ``--save_probabilities`` all see MORSE's output.

nnU-Net finds these classes through ``nnUNet_extTrainer`` (``morse nnunet trainer-dir`` prints
the folder). Budget variants follow nnU-Net's names: ``nnUNetTrainerMORSE_5epochs`` trains as
``nnUNetTrainer_5epochs`` does.
"""

from __future__ import annotations

import numpy as np
import torch
from nnunetv2.run import run_training
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from morse.config import LossConfig
from morse.errors import ConfigError
from morse.losses import DEFAULT_WEIGHTS, point_loss, point_weight
from morse.nnunet.network import DEFAULT_SCALES, MorseUNet, TrainingOutputs
from morse.nnunet.weights import load_plain_weights

__all__ = [
    "MorsePointLoss", "nnUNetTrainerMORSE", "nnUNetTrainerMORSE_tiny",
    *(f"nnUNetTrainerMORSE_{n}epoch{'s' if n > 1 else ''}"
      for n in (1, 5, 10, 20, 50, 100, 250, 500, 750, 2000, 4000, 8000)),
]

CUDA = torch.device("cuda")
"""nnU-Net's default device (its trainers take it as an argument)."""


class MorsePointLoss(nn.Module):
    """nnU-Net's loss on the network's outputs plus ``w(t)`` x the point cross-entropy.

    Args:
        base: nnU-Net's loss (deep-supervision wrapped or not).
        deep_supervision: whether ``base`` takes the list of outputs.
        schedule, weight: the point weight's schedule and its final / constant value.

    ``step`` and ``total_steps`` (set by the trainer before each step) place ``w(t)``;
    ``last_point_ce`` holds the last training step's point loss for the log.
    """

    def __init__(self, base: nn.Module, deep_supervision: bool, schedule: str,
                 weight: float) -> None:
        super().__init__()
        self.base = base
        self.deep_supervision = deep_supervision
        self.schedule = schedule
        self.weight = weight
        self.step, self.total_steps = 0, 1
        self.last_point_ce = float("nan")

    def forward(self, output, target) -> torch.Tensor:
        if not isinstance(output, TrainingOutputs):  # eval: rendered logits, no points
            return self.base(output, target)
        loss = self.base(output if self.deep_supervision else output[0], target)
        label = target[0] if isinstance(target, list) else target
        ce = point_loss(output.points.logits, output.points.coords, label)
        self.last_point_ce = float(ce.detach())
        w = point_weight(self.schedule, self.weight, self.step, self.total_steps)
        return loss + w * ce


class nnUNetTrainerMORSE(nnUNetTrainer):
    """nnU-Net's trainer with MORSE's renderer; subclasses change the class attributes."""

    epochs: int | None = None
    """nnU-Net's ``num_epochs`` (None: nnU-Net's 1000)."""
    iterations_per_epoch: int | None = None
    """nnU-Net's ``num_iterations_per_epoch`` (None: 250)."""
    validation_iterations: int | None = None
    """nnU-Net's ``num_val_iterations_per_epoch`` (None: 50)."""
    feature_scales: int = DEFAULT_SCALES
    """Feature maps the renderer reads, the finest of [bottleneck, decoder stages]."""
    renderer_options: dict = {}
    """``RendererConfig`` fields that replace its defaults."""
    point_schedule: str = LossConfig.schedule
    """The point loss weight's schedule (``morse.losses.POINT_WEIGHT_SCHEDULES``)."""
    point_weight: float | None = LossConfig.point_weight
    """Final / constant point weight; None: the schedule's default."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = CUDA):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.label_manager.has_regions:
            raise ConfigError(
                "nnUNetTrainerMORSE: region-based training (dataset.json 'regions_class_order') "
                "is not supported yet; MORSE renders softmax class logits"
            )
        if self.label_manager.has_ignore_label:
            raise ConfigError(
                "nnUNetTrainerMORSE: the ignore label is not supported yet (its cells would "
                "be drawn as training points with no class); remove 'ignore' from dataset.json"
            )
        for name, value in (("num_epochs", self.epochs),
                            ("num_iterations_per_epoch", self.iterations_per_epoch),
                            ("num_val_iterations_per_epoch", self.validation_iterations)):
            if value is not None:
                setattr(self, name, value)
        self._iteration = 0

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager,
                                   configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        """The planned network (nnU-Net's own builder) inside ``MorseUNet``; nnU-Net's
        predictor calls this too, so a checkpoint predicts with its renderer."""
        network = nnUNetTrainer.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_output_channels,
            enable_deep_supervision)
        return MorseUNet(network, num_output_channels, cls.feature_scales,
                         **cls.renderer_options)

    def initialize(self):
        # nnU-Net's -pretrained_weights wants every key of the network in the file; a plain
        # nnU-Net checkpoint has no renderer, so MORSE networks get a loader that starts it fresh
        run_training.load_pretrained_weights = load_plain_weights
        super().initialize()

    def _do_i_compile(self) -> bool:
        # the renderer picks data-dependent points (top-k, row masks): graphs would break
        return False

    def _build_loss(self) -> nn.Module:
        schedule = self.point_schedule
        weight = DEFAULT_WEIGHTS[schedule] if self.point_weight is None else self.point_weight
        return MorsePointLoss(super()._build_loss(), self.enable_deep_supervision, schedule,
                              weight)

    def on_train_epoch_start(self):
        self._iteration = 0
        super().on_train_epoch_start()

    def train_step(self, batch: dict) -> dict:
        self.loss.step = self.current_epoch * self.num_iterations_per_epoch + self._iteration
        self.loss.total_steps = self.num_epochs * self.num_iterations_per_epoch
        self._iteration += 1
        result = super().train_step(batch)
        result["point_ce"] = np.float32(self.loss.last_point_ce)
        return result

    def on_train_epoch_end(self, train_outputs: list[dict]):
        super().on_train_epoch_end(train_outputs)
        points = float(np.mean([out["point_ce"] for out in train_outputs]))
        w = point_weight(self.loss.schedule, self.loss.weight, self.loss.step,
                         self.loss.total_steps)
        self.print_to_log_file(f"MORSE point loss {points:.4f} (weight {w:.3f})")


class nnUNetTrainerMORSE_tiny(nnUNetTrainerMORSE):
    """For tests and CI: 1 epoch of 3 iterations, 2 validation batches, a narrow renderer."""

    epochs, iterations_per_epoch, validation_iterations = 1, 3, 2
    feature_scales = 3
    renderer_options = dict(expert_width=16, head_width=16, num_frequencies=8, train_points=256,
                            render_points=512)


class nnUNetTrainerMORSE_1epoch(nnUNetTrainerMORSE):
    epochs = 1


class nnUNetTrainerMORSE_5epochs(nnUNetTrainerMORSE):
    epochs = 5


class nnUNetTrainerMORSE_10epochs(nnUNetTrainerMORSE):
    epochs = 10


class nnUNetTrainerMORSE_20epochs(nnUNetTrainerMORSE):
    epochs = 20


class nnUNetTrainerMORSE_50epochs(nnUNetTrainerMORSE):
    epochs = 50


class nnUNetTrainerMORSE_100epochs(nnUNetTrainerMORSE):
    epochs = 100


class nnUNetTrainerMORSE_250epochs(nnUNetTrainerMORSE):
    epochs = 250


class nnUNetTrainerMORSE_500epochs(nnUNetTrainerMORSE):
    epochs = 500


class nnUNetTrainerMORSE_750epochs(nnUNetTrainerMORSE):
    epochs = 750


class nnUNetTrainerMORSE_2000epochs(nnUNetTrainerMORSE):
    epochs = 2000


class nnUNetTrainerMORSE_4000epochs(nnUNetTrainerMORSE):
    epochs = 4000


class nnUNetTrainerMORSE_8000epochs(nnUNetTrainerMORSE):
    epochs = 8000
