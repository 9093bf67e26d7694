"""MORSE: implicit anatomical rendering for medical image segmentation with stochastic experts.

The public interface: ``Morse`` (a backbone plus the renderer), ``MorseRenderer`` (the renderer
alone, for one's own training loop) with its ``RendererConfig``, ``MorseLoss`` and
``build_backbone``.
"""

from morse.backbone import build_backbone
from morse.losses import MorseLoss, point_loss
from morse.model import Morse, MorseOutput
from morse.renderer import MorseRenderer, RendererConfig

__version__ = "0.1.0"
__all__ = [
    "Morse", "MorseOutput", "MorseRenderer", "RendererConfig", "MorseLoss", "point_loss",
    "build_backbone", "__version__",
]
