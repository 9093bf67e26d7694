"""MORSE: implicit anatomical rendering for medical image segmentation with stochastic experts.

The public interface: ``Morse`` (a backbone plus the renderer), ``MorseLoss`` and
``build_backbone``.
"""

from morse.losses import MorseLoss
from morse.model import Morse, MorseOutput

__version__ = "0.1.0"
__all__ = ["Morse", "MorseOutput", "MorseLoss", "build_backbone", "__version__"]


def build_backbone(name: str, spatial_dims: int, in_channels: int, num_classes: int, **options):
    """Build a backbone that returns (logits, features); see ``morse.backbone.factory``."""
    from morse.backbone.factory import build_backbone as _build

    return _build(name, spatial_dims, in_channels, num_classes, **options)
