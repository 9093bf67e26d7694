"""MORSE: implicit anatomical rendering for medical image segmentation with stochastic experts.

The public interface: ``Morse`` (a backbone plus the renderer), ``MorseLoss`` and
``build_backbone``.
"""

from morse.backbone import build_backbone
from morse.losses import MorseLoss
from morse.model import Morse, MorseOutput

__version__ = "0.1.0"
__all__ = ["Morse", "MorseOutput", "MorseLoss", "build_backbone", "__version__"]
