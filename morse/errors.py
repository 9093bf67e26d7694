"""The exceptions MORSE raises for people: each message is one line naming the file or key at
fault and the fix. The command line prints them without a traceback.

>>> issubclass(DataError, MorseError) and issubclass(DataError, ValueError)
True
"""

from __future__ import annotations

__all__ = ["MorseError", "ConfigError", "DataError", "CheckpointError", "TrainingDiverged"]


class MorseError(Exception):
    """Base of the errors below: a problem the user can fix, explained in one line."""


class ConfigError(MorseError, ValueError):
    """A configuration problem, with the key at fault in the message."""


class DataError(MorseError, ValueError):
    """Bad input data. The message names the file, the problem and the fix, in one line."""


class CheckpointError(MorseError, RuntimeError):
    """A checkpoint that cannot be used; the message is one line naming the file and the fix."""


class TrainingDiverged(MorseError, FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the checkpoint kept."""
