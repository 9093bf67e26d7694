"""The enumerated keys' choices, declared in the config layer, agree with the code they name."""

from __future__ import annotations

import numpy as np
import pytest

from morse.backbone import factory
from morse.backbone.factory import available_backbones, register_backbone
from morse.config import choices, load_config
from morse.data.formats import available_formats
from morse.data.intensity import INTENSITY_SCHEMES, resolve_intensity
from morse.data.volume import Volume
from morse.device import PRECISIONS
from morse.errors import ConfigError
from morse.losses import DICE_POOLING, POINT_WEIGHT_SCHEDULES, MorseLoss


def test_each_registry_and_its_config_choices_agree():
    assert choices.BACKBONES.builtin == tuple(available_backbones())
    assert choices.FORMATS.builtin == tuple(available_formats())
    assert set(choices.POINT_WEIGHT_SCHEDULES) == set(POINT_WEIGHT_SCHEDULES)
    assert INTENSITY_SCHEMES == choices.INTENSITY_SCHEMES.builtin
    assert DICE_POOLING == choices.DICE_POOLING.builtin
    assert choices.TRAIN_PRECISIONS.builtin == PRECISIONS


def test_the_bound_registries_are_read_when_a_config_is_checked():
    assert tuple(choices.BACKBONES) == tuple(available_backbones())
    assert tuple(choices.FORMATS) == tuple(available_formats())


def test_every_config_choice_is_implemented():
    train = [Volume(np.arange(64.0).reshape(1, 4, 4, 4), np.ones((4, 4, 4)), case_id="t")]
    for scheme in choices.INTENSITY_SCHEMES:
        assert len(resolve_intensity(scheme, ["CT"], lambda: train)) == 1
    for schedule in choices.POINT_WEIGHT_SCHEDULES:
        for dice in choices.DICE_POOLING:
            MorseLoss(3, schedule=schedule, dice=dice)


def test_a_backbone_registered_by_a_user_is_allowed_at_load(monkeypatch):
    monkeypatch.setattr(factory, "_REGISTRY", dict(factory._REGISTRY))  # undone after the test
    with pytest.raises(ConfigError, match="model.backbone must be one of basicunet"):
        load_config("demo", ["model.backbone=mine"])
    register_backbone("mine", factory.backbone_spec("unet"))
    assert load_config("demo", ["model.backbone=mine"]).model.backbone == "mine"
    assert "mine" not in choices.BACKBONES.builtin
