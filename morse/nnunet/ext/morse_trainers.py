"""What nnU-Net imports from ``nnUNet_extTrainer``: MORSE's trainers, defined (and pickled, and
named in checkpoints) as ``morse.nnunet.trainer``'s classes."""

from morse.nnunet.trainer import *  # noqa: F403
from morse.nnunet.trainer import __all__  # noqa: F401
