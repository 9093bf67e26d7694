"""validate(): the Dice of evaluation, with its empty-mask policy."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from morse.config import Config
from morse.data.volume import Volume
from morse.training import loop


class _StubModel:
    num_classes = 3

    def train(self) -> None:
        pass


def test_validate_counts_a_class_absent_from_both_maps_as_dice_1(monkeypatch):
    truth = np.zeros((4, 4, 2), dtype=np.int64)
    truth[:2] = 1  # 16 voxels of class 1; class 2 in neither map
    coarse = np.zeros_like(truth)
    coarse[1:3] = 1  # 8 of 16 shared: Dice 0.5
    rendered = truth.copy()
    rendered[3, 3, 1] = 2  # class 1 exact, class 2 hallucinated: Dice 1 and 0
    prediction = SimpleNamespace(coarse=coarse, rendered=rendered)
    monkeypatch.setattr(loop, "predict_volume", lambda *args, **kwargs: prediction)
    volume = Volume(np.zeros((1, 4, 4, 2)), truth)
    scores = loop.validate(_StubModel(), [volume], Config(), torch.device("cpu"))
    # the former foreground_dice skipped class 2 in the coarse map and gave 0.5
    assert scores["coarse"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores["rendered"] == pytest.approx((1.0 + 0.0) / 2)
