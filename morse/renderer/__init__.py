"""MORSE's renderer: ``MorseRenderer`` and its one ``RendererConfig``, plus the pieces they use
(point sampling, Fourier encoding, stochastic experts, implicit head, subdivision rendering)."""

from morse.config import RendererConfig, default_train_points, renderer_config
from morse.renderer.module import MorseRenderer, PointPrediction, Rendering

__all__ = [
    "MorseRenderer", "PointPrediction", "Rendering", "RendererConfig", "default_train_points",
    "renderer_config",
]
