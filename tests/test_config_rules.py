"""Config rules: one rule per field, the same message from YAML and from the Python API."""

from __future__ import annotations

import dataclasses

import pytest

from morse import Morse, MorseRenderer, RendererConfig
from morse.config import Config, ModelConfig, check_fields, describe_config, load_config
from morse.config.rules import describe_rule
from morse.errors import ConfigError

from helpers import ToyBackbone

BAD_RENDERER_VALUES = [  # (key, the value in Python, the same value in YAML)
    ("expert_width", 0, "0"),
    ("importance_ratio", 1.5, "1.5"),
    ("render_steps", -1, "-1"),
    ("render_margin", 0.0, "0.0"),
    ("render_share", 1.5, "1.5"),
    ("render_precision", "fp8", "fp8"),
    ("dropout", 1.0, "1.0"),
    ("fourier_scale", float("nan"), ".nan"),
    ("oversample_ratio", float("inf"), ".inf"),
]


@pytest.mark.parametrize(("key", "value", "text"), BAD_RENDERER_VALUES)
def test_a_bad_renderer_value_gives_one_message_from_yaml_and_from_python(key, value, text):
    with pytest.raises(ConfigError) as direct:
        RendererConfig(**{key: value})
    message = str(direct.value)
    assert message.startswith(f"{key} must be ") and "\n" not in message
    with pytest.raises(ConfigError) as renderer:
        MorseRenderer([8], 2, 2, **{key: value})
    with pytest.raises(ConfigError) as model:
        Morse(ToyBackbone(), 3, 2, renderer=False, **{key: value})
    with pytest.raises(ConfigError) as loaded:
        load_config("demo", [f"model.{key}={text}"])
    assert str(renderer.value) == str(model.value) == message
    assert str(loaded.value).endswith(f"demo.yaml: model.{message}")


def test_a_bad_value_of_any_section_names_its_key_the_same_way():
    with pytest.raises(ConfigError) as loaded:
        load_config("demo", ["train.lr=-1"])
    with pytest.raises(ConfigError) as direct:
        dataclasses.replace(Config().train, lr=-1.0)
    assert str(loaded.value).endswith(f"demo.yaml: train.{direct.value}")
    assert str(direct.value) == "lr must be >= 0, got -1.0"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.lr=.nan", "train.lr must be a finite number, got nan"),
        ("model.fourier_scale=.inf", "model.fourier_scale must be a finite number, got inf"),
        ("eval.overlap=.nan", "eval.overlap must be a finite number, got nan"),
        ("loss.point_weight=-.inf", "loss.point_weight must be a finite number, got -inf"),
        ("data.split_fractions=[.nan,0.5,0.5]", r"data.split_fractions must be finite numbers"),
        ("eval.nsd_tolerances_mm=[1.0,.inf]", r"eval.nsd_tolerances_mm must be finite numbers"),
    ],
)
def test_nan_and_infinity_are_refused_in_float_keys(override, named):
    with pytest.raises(ConfigError, match=named):
        load_config("demo", [override])


def test_a_config_changed_after_it_was_built_is_checked_whole_with_its_origin():
    cfg = Config()
    cfg.data.num_workers = -1
    with pytest.raises(ConfigError, match=r"^run.yaml: data.num_workers must be >= 0, got -1$"):
        check_fields(cfg, "run.yaml")


def test_none_passes_the_rule_of_an_optional_key():
    assert RendererConfig(render_margin=None, render_share=None).render_margin is None
    with pytest.raises(ConfigError, match=r"render_margin must be > 0 or null, got 0.0"):
        RendererConfig(render_margin=0.0)


def test_the_help_shows_the_rule_that_is_checked_for_every_key_with_one():
    text = describe_config(load_config("demo"))
    for section in dataclasses.fields(Config):
        cls = type(getattr(Config(), section.name))
        if not dataclasses.is_dataclass(cls):
            continue
        for item in dataclasses.fields(cls):
            rule = describe_rule(cls, item.name)
            if rule:
                line = next(line for line in text.splitlines()
                            if line.strip().startswith(f"{section.name}.{item.name}:"))
                assert line.endswith(f"must be {rule}"), line
    assert describe_rule(ModelConfig, "render_share") == "in (0, 1] or null"
    assert describe_rule(ModelConfig, "dropout") == "in [0, 1)"
