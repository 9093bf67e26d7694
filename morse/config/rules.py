"""The allowed values of the config keys: declared once on each field, checked by one function.

A field states its rule in its metadata, next to its default and documentation::

    iterations: int = field(default=30000, metadata=rule(minimum=1))

:func:`check_fields` walks a config's dataclasses and checks every field against its rule,
and every float against NaN and infinity. Each config dataclass calls it when built (so
``RendererConfig(expert_width=0)`` and ``Morse(..., expert_width=0)`` fail at once), and the
YAML loader names the file and section in front of the same message. ``morse config``'s help
prints :func:`describe_rule` of each field, so the help cannot drift from what is checked.

>>> from morse.config import Config, TrainConfig
>>> TrainConfig(iterations=-3)
Traceback (most recent call last):
...
morse.errors.ConfigError: iterations must be >= 1, got -3
>>> cfg = Config()
>>> cfg.eval.overlap = float("nan")
>>> check_fields(cfg, "config")
Traceback (most recent call last):
...
morse.errors.ConfigError: config: eval.overlap must be a finite number, got nan
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from morse.config.choices import Choices
from morse.errors import ConfigError

__all__ = ["Rule", "rule", "check_fields", "describe_rule", "Checked"]

_KEY = "morse.rule"


@dataclass(frozen=True)
class Rule:
    """What one key allows: bounds, a set of choices, or a test described in words.

    Attributes:
        minimum, maximum: inclusive bounds.
        above, below: exclusive bounds.
        choices: the allowed values (a tuple, or :class:`Choices` read when checked).
        test: ``test(value) -> bool`` for what bounds and choices cannot say; ``text`` then
            says in words what it allows (the whole of it: no "or null" is added).
        text: the words for ``test``.

    None passes every rule of a field whose type admits it.
    """

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple | Choices | None = None
    test: Callable[[Any], bool] | None = None
    text: str = ""

    def allows(self, value: Any) -> bool:
        """Whether ``value`` keeps to this rule."""
        if self.choices is not None and value not in self.choices:
            return False
        if self.test is not None and not self.test(value):
            return False
        return not (
            (self.minimum is not None and value < self.minimum)
            or (self.maximum is not None and value > self.maximum)
            or (self.above is not None and value <= self.above)
            or (self.below is not None and value >= self.below)
        )

    def describe(self, optional: bool = False) -> str:
        """The rule in words, e.g. ``>= 1``, ``in [0, 1)``, ``one of sgd, adamw``."""
        if self.test is not None:
            return self.text
        if self.choices is not None:
            words = "one of " + ", ".join(str(choice) for choice in self.choices)
        else:
            words = _bounds(self.minimum, self.above, self.maximum, self.below)
        return f"{words} or null" if optional else words


def rule(
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    choices: tuple | Choices | None = None,
    test: Callable[[Any], bool] | None = None,
    text: str = "",
) -> Mapping[str, Rule]:
    """Field metadata holding a :class:`Rule`: ``field(default=1, metadata=rule(minimum=1))``."""
    return {_KEY: Rule(minimum, maximum, above, below, choices, test, text)}


def _bounds(minimum: Any, above: Any, maximum: Any, below: Any) -> str:
    low = f"[{minimum}" if minimum is not None else f"({above}" if above is not None else ""
    high = f"{maximum}]" if maximum is not None else f"{below})" if below is not None else ""
    if low and high:
        return f"in {low}, {high}"
    if low:
        return f">= {minimum}" if minimum is not None else f"> {above}"
    if high:
        return f"<= {maximum}" if maximum is not None else f"< {below}"
    return ""


@cache
def _optional(cls: type) -> dict[str, bool]:
    """``{field: whether its type admits None}`` of a dataclass."""
    hints = typing.get_type_hints(cls)
    return {
        name: typing.get_origin(hint) in (typing.Union, types.UnionType)
        and type(None) in typing.get_args(hint)
        for name, hint in hints.items()
    }


def describe_rule(cls: type, name: str) -> str:
    """The rule of field ``name`` of dataclass ``cls`` in words, "" if it has none."""
    found = {f.name: f for f in dataclasses.fields(cls)}[name].metadata.get(_KEY)
    return "" if found is None else found.describe(_optional(cls)[name])


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(item) for item in value)
    return True


def check_fields(config: Any, origin: str = "", prefix: str = "") -> None:
    """Check every field of the dataclass ``config`` and of the dataclasses in it.

    Args:
        config: a config dataclass (``Config``, a section, ``RendererConfig``).
        origin: where it came from (a file name), put in front of the message.
        prefix: the section of ``config``'s fields in the message, e.g. ``"model."``.

    Raises:
        ConfigError: one line, ``[origin: ]<prefix><field> must be <rule>, got <value>``.
    """
    where = f"{origin}: " if origin else ""
    optional = _optional(type(config))
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        key = f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value):
            check_fields(value, origin, f"{key}.")
            continue
        if not _finite(value):
            numbers = "finite numbers" if isinstance(value, (list, tuple)) else "a finite number"
            raise ConfigError(f"{where}{key} must be {numbers}, got {value!r}")
        found = item.metadata.get(_KEY)
        if found is None or (value is None and optional[item.name]):
            continue
        if not found.allows(value):
            words = found.describe(optional[item.name])
            raise ConfigError(f"{where}{key} must be {words}, got {value!r}")


class Checked:
    """Base of the config dataclasses: their fields are checked as soon as they are built."""

    def __post_init__(self) -> None:
        check_fields(self)
