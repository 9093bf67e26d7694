"""Command fields: a dataclass field that documents itself and becomes an argparse argument."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

__all__ = ["option"]


def option(help: str, *flags: str, **kwargs: Any) -> Any:
    """A dataclass field that documents itself and becomes an argparse argument."""
    default = kwargs.pop("default", dataclasses.MISSING)
    factory = kwargs.pop("default_factory", dataclasses.MISSING)
    metadata = {"help": help, "flags": flags, "argparse": kwargs}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)
