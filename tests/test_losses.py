"""MorseLoss: parts, schedules, label checks."""

import pytest
import torch

from morse import MorseLoss
from morse.losses import point_weight

from helpers import small_morse


def test_delayed_ramp_matches_the_authors_schedule():
    total = 1000
    for step in (0, 499, 500, 750, 1000):
        assert point_weight("delayed-ramp", 0.5, step, total) == pytest.approx(
            max(0.0, (step - total / 2) / total))
    assert point_weight("constant", 1.0, 123, total) == 1.0
    with pytest.raises(ValueError, match="delayed-ramp"):
        point_weight("cosine", 1.0, 0, 1)


def test_loss_parts_add_up():
    torch.manual_seed(0)
    model = small_morse().train()
    out = model(torch.randn(2, 1, 16, 16))
    label = torch.randint(0, 3, (2, 16, 16))
    loss, parts = MorseLoss(3, schedule="constant", point_weight=1.0)(out, label)
    expected = 0.5 * (parts["coarse_ce"] + parts["coarse_dice"]) + parts["point_ce"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    ramp_loss, ramp_parts = MorseLoss(3, schedule="delayed-ramp")(out, label, 10, 100)
    assert ramp_parts["point_weight"] == 0.0
    assert ramp_loss.item() == pytest.approx(0.5 * (parts["coarse_ce"] + parts["coarse_dice"]),
                                             rel=1e-5)


def test_plain_backbone_loss_has_no_point_term():
    out = small_morse(renderer=False).train()(torch.randn(1, 1, 16, 16))
    _, parts = MorseLoss(3)(out, torch.zeros(1, 1, 16, 16, dtype=torch.long))
    assert "point_ce" not in parts


@pytest.mark.parametrize("bad, match", [(3, r"\[0, 3\).*\[0, 3\]"), (-1, r"\[-1, 0\]")])
def test_labels_outside_the_class_range_are_named(bad, match):
    out = small_morse().train()(torch.randn(1, 1, 16, 16))
    label = torch.zeros(1, 1, 16, 16, dtype=torch.long)
    label[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=match):
        MorseLoss(3)(out, label)


def test_label_of_the_wrong_shape_is_named():
    out = small_morse().train()(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"expected \(B, 1, 16, 16\)"):
        MorseLoss(3)(out, torch.zeros(1, 1, 8, 8, dtype=torch.long))


def test_batch_pooled_dice_is_one_dice_per_class_over_the_batch():
    from morse.model import MorseOutput

    label = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    label[0, 0, :, :4] = 2  # class 2 only in the first image
    label[1, 0, :4] = 1
    coarse = 4.0 * torch.nn.functional.one_hot(label[:, 0], 3).permute(0, 3, 1, 2).float()
    output = MorseOutput(coarse=coarse, logits=coarse)
    probs = coarse.softmax(1)
    onehot = torch.nn.functional.one_hot(label[:, 0], 3).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum((0, 2, 3))
    pooled = 1 - (2 * inter + 1e-5) / (probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1e-5)
    _, batch_parts = MorseLoss(3, dice="batch")(output, label)
    _, sample_parts = MorseLoss(3, dice="sample")(output, label)
    assert batch_parts["coarse_dice"] == pytest.approx(pooled.mean().item(), rel=1e-5)
    # per sample, the class missing from an image scores a loss near 1 on it
    assert sample_parts["coarse_dice"] > batch_parts["coarse_dice"] + 0.2


def test_unknown_dice_pooling_is_refused():
    with pytest.raises(ValueError, match="batch"):
        MorseLoss(3, dice="voxel")
