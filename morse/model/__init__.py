"""The MORSE model: a backbone with the renderer (``Morse``), built from a config, and its
prediction of whole volumes (slice batches in 2D, sliding windows in 3D, flip TTA)."""

from morse.model.build import build_model, check_buildable
from morse.model.module import Morse, MorseOutput
from morse.model.settings import InferenceConfig
from morse.model.volumes import VolumePrediction, predict_volume

__all__ = [
    "InferenceConfig", "Morse", "MorseOutput", "VolumePrediction", "build_model",
    "check_buildable", "predict_volume",
]
