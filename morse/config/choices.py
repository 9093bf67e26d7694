"""The allowed names of the enumerated config keys, declared in the config layer.

The config sits below the code that implements these names (backbones, data formats,
intensity schemes, loss schedules), so it cannot ask that code which names exist. It declares
the built-in names here instead (sorted, as the registries list them); a registry that can
grow (backbones, data formats) binds its live names with :meth:`Choices.bind` when it is
imported, so a name registered by a user is allowed at load time, and the fixed sets are read
from here (intensity schemes, Dice pooling) or implemented under these names (schedules).
``tests/test_config_choices.py`` checks that each registry and its choices agree.

>>> FORMATS.builtin
('acdc', 'atlas-demo', 'mni-tissue', 'msd', 'nnunet', 'synapse')
>>> "nnunet" in FORMATS, "bogus" in FORMATS
(True, False)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from morse.device import PRECISIONS

__all__ = [
    "Choices", "BACKBONES", "FORMATS", "INTENSITY_SCHEMES", "POINT_WEIGHT_SCHEDULES",
    "DICE_POOLING", "TRAIN_PRECISIONS", "RENDER_PRECISIONS",
]


class Choices:
    """The allowed values of one enumerated key.

    Args:
        *builtin: the values the package ships with, in the order the help lists them.
    """

    def __init__(self, *builtin: object) -> None:
        self.builtin = builtin
        self._source: Callable[[], Iterable[object]] | None = None

    def bind(self, source: Callable[[], Iterable[object]]) -> None:
        """Read the values from ``source()`` (the owning registry's names) from now on."""
        self._source = source

    @property
    def names(self) -> tuple:
        """The allowed values now: the bound registry's, else the built-in ones."""
        return self.builtin if self._source is None else tuple(self._source())

    def __contains__(self, value: object) -> bool:
        return value in self.names

    def __iter__(self) -> Iterator:
        return iter(self.names)

    def __repr__(self) -> str:
        return f"Choices{self.names!r}"


BACKBONES = Choices("basicunet", "dynunet", "swinunetr", "transunet", "unet", "unetr")
"""``model.backbone``; bound to ``morse.backbone``'s registry (``register_backbone``)."""
FORMATS = Choices("acdc", "atlas-demo", "mni-tissue", "msd", "nnunet", "synapse")
"""``data.format``; bound to ``morse.data.formats``' registry (``register_format``)."""
INTENSITY_SCHEMES = Choices("auto", "zscore", "ct", "ct-percentile", "minmax", "none")
"""``data.normalize``; ``morse.data.intensity`` reads them."""
POINT_WEIGHT_SCHEDULES = Choices("constant", "delayed-ramp")
"""``loss.schedule``; the keys of ``morse.losses.POINT_WEIGHT_SCHEDULES``."""
DICE_POOLING = Choices("batch", "sample")
"""``loss.dice``; ``morse.losses`` reads them."""
TRAIN_PRECISIONS = Choices(*PRECISIONS)
"""``train.precision``: autocast precisions (``morse.device``)."""
RENDER_PRECISIONS = Choices("fp32", "bf16", "auto")
"""``render_precision``: the point MLPs' precision."""
