"""Run configurations from YAML: presets, ``section.key=value`` overrides, and checks.

Unknown keys and wrong types are errors that name the key (and a close match), so a typo
fails at load time instead of silently training with a default.

>>> cfg = load_config("demo", overrides=["train.iterations=10"])
>>> cfg.train.iterations, cfg.model.backbone
(10, 'unet')
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from morse.config.schema import Config
from morse.errors import ConfigError
from morse.io import atomic_write_text

__all__ = ["load_config", "config_from_dict", "config_to_dict", "save_config", "available_presets"]


def available_presets() -> list[str]:
    """Names of the YAML presets shipped in ``morse/configs``."""
    folder = resources.files("morse.configs")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_config(source: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a preset name or YAML file, apply ``section.key=value`` overrides, validate."""
    path = Path(source)
    if not path.exists():
        presets = available_presets()
        if str(source) not in presets:
            raise ConfigError(
                f"{source}: no such config file or preset; presets: {', '.join(presets)}"
            )
        path = Path(str(resources.files("morse.configs") / f"{source}.yaml"))
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except _DuplicateKey as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())  # pyyaml's message spans lines
        raise ConfigError(f"{path}: not valid YAML ({detail})") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides or []:
        _apply_override(raw, item)
    return config_from_dict(raw, origin=str(path))


class _DuplicateKey(ValueError):
    """A key written twice in one YAML mapping."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (plain YAML keeps the
    last one silently, so a duplicated section would drop the first without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(f"key {key!r} written twice (lines {seen[key] + 1} and "
                                    f"{key_node.start_mark.line + 1}); keep one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _apply_override(raw: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: write it as section.key=value")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(value)


def config_from_dict(raw: dict, origin: str = "config") -> Config:
    """Build a validated ``Config`` from plain data (YAML or a checkpoint)."""
    return _build(Config, raw, origin, prefix="")


def _build(cls: type, raw: Any, origin: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: {prefix or 'config'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ConfigError(
                f"{origin}: unknown key {prefix}{key}{hint} (known: {', '.join(fields)})"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, value, origin, f"{prefix}{key}.")
        else:
            values[key] = _check_type(value, hint, f"{prefix}{key}", origin)
    try:
        return cls(**values)
    except ConfigError as error:  # the rules of the fields (morse.config.rules), one section
        raise ConfigError(f"{origin}: {prefix}{error}") from error


def _check_type(value: Any, hint: Any, key: str, origin: str) -> Any:
    origin_type = typing.get_origin(hint)
    if origin_type in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        for option in options:
            try:
                return _check_type(value, option, key, origin)
            except ConfigError:
                pass
        names = " or ".join(_type_name(option) for option in options)
        raise ConfigError(f"{origin}: {key} must be {names}, got {value!r}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{origin}: {key} must be null, got {value!r}")
    if hint is Any:
        return value
    if origin_type is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{origin}: {key} must be a list, got {value!r}")
        (item_hint,) = typing.get_args(hint)
        return [_check_type(v, item_hint, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if origin_type is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{origin}: {key} must be true or false, got {value!r}")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{origin}: {key} must be an integer, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(
            f"{origin}: {key} must be {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def config_to_dict(cfg: Config) -> dict:
    """Plain data (dicts, lists, str, numbers, bool, None), safe for YAML and checkpoints."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML."""
    path = Path(path)
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path
