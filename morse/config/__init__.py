"""Run configuration: typed dataclasses loaded from YAML, checked, with ``a.b=value`` overrides.

* :mod:`~morse.config.schema` - the sections (``Config``, ``DataConfig``, ...);
* :mod:`~morse.config.renderer` - ``RendererConfig``, every option of the renderer;
* :mod:`~morse.config.rules` - the allowed values, declared on the fields, and their check;
* :mod:`~morse.config.loading` - presets, YAML files and overrides;
* :mod:`~morse.config.help` - ``morse config``: every key with its documentation and rule.
"""

from morse.config.help import describe_config, field_docs
from morse.config.loading import (
    available_presets,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from morse.config.renderer import RendererConfig, default_train_points, renderer_config
from morse.config.rules import check_fields
from morse.config.schema import (
    Config,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
)

__all__ = [
    "Config", "DataConfig", "ModelConfig", "LossConfig", "TrainConfig", "EvalConfig",
    "RendererConfig", "default_train_points", "renderer_config",
    "load_config", "config_from_dict", "config_to_dict", "save_config", "available_presets",
    "check_fields", "describe_config", "field_docs",
]
