"""``morse config``: the resolved configuration, one line of documentation per key.

Each key's documentation is the string written under its field in the config dataclasses
(``morse.config.schema`` and ``morse.config.renderer``); the allowed values are the rule
declared on the same field, the one checked when a config is built, so the help cannot drift
from what is enforced.

>>> from morse.config import load_config
>>> text = describe_config(load_config("demo"))
>>> "train.iterations: 1600" in text and "must be >= 1" in text
True
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from functools import cache

from morse.config.rules import describe_rule
from morse.config.schema import Config

__all__ = ["describe_config", "field_docs"]


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: first line of the string under it}`` for a dataclass and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, following in zip(body, body[1:]):
            is_doc = isinstance(following, ast.Expr) and isinstance(
                getattr(following, "value", None), ast.Constant
            )
            if isinstance(node, ast.AnnAssign) and is_doc and isinstance(node.target, ast.Name):
                docs[node.target.id] = str(following.value.value).strip().splitlines()[0]
    return docs


def describe_config(cfg: Config) -> str:
    """Every key with its value, its documentation and its allowed values, by section."""
    lines = [f"name: {cfg.name}"]
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(values):
            continue
        lines.append(f"\n{section.name}:  # {type(values).__doc__.strip().splitlines()[0]}")
        docs = field_docs(type(values))
        for item in dataclasses.fields(values):
            key = f"{section.name}.{item.name}"
            allowed = describe_rule(type(values), item.name)
            allowed = f"must be {allowed}" if allowed else ""
            notes = "; ".join(n for n in (docs.get(item.name, "").rstrip("."), allowed) if n)
            value = getattr(values, item.name)
            lines.append(f"  {key}: {_show(value)}" + (f"    # {notes}" if notes else ""))
    return "\n".join(lines)


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
