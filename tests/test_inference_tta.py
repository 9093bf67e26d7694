"""Flip test-time augmentation: one backbone pass per mirroring, their mean rendered; off by
default and then the plain model's prediction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from morse.model.settings import InferenceConfig
from morse.model.tta import FlipAveraged, flip_axes
from morse.model.volumes import predict_volume

from helpers import small_morse


def _counted(spatial_dims: int):
    """A small model (eval) and the list of images its backbone was called with."""
    torch.manual_seed(0)
    model = small_morse(spatial_dims, render_points=200).eval()
    seen: list[torch.Tensor] = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    return model, seen


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_tta_runs_the_backbone_on_every_flip_and_renders_the_mean_of_their_logits(spatial_dims):
    model, seen = _counted(spatial_dims)
    image = torch.randn(2, 1, *([16] * spatial_dims))
    with torch.no_grad():
        out = FlipAveraged(model)(image)
        flips = flip_axes(spatial_dims)
        assert len(seen) == len(flips) == 2**spatial_dims
        for axes, passed in zip(flips, seen):
            assert torch.equal(passed, image.flip(axes))
        mean = sum(model.backbone(image.flip(a))[0].flip(a) for a in flips) / len(flips)
        features = model.backbone(image)[1]
        expected = model.renderer.render(features, mean)
    torch.testing.assert_close(out.coarse, mean)
    assert torch.equal(out.logits, expected.logits) and torch.equal(out.rendered,
                                                                    expected.rendered)
    plain = model(image)
    assert not torch.allclose(out.coarse, plain.coarse)  # the toy is not flip-invariant


@pytest.mark.parametrize(("spatial_dims", "shape", "passes"),
                         [(2, (40, 36, 3), 4 * 2), (3, (20, 24, 16), 8 * 4)])
def test_volumes_with_tta_pass_every_slice_batch_or_window_through_every_flip(
    spatial_dims, shape, passes
):
    model, seen = _counted(spatial_dims)
    image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    patch = (16, 16, 16) if spatial_dims == 3 else None  # 4 windows at overlap 0.25
    settings = InferenceConfig(patch_size=patch, slice_batch_size=2, sw_batch_size=1,
                               overlap=0.25)
    with_tta = predict_volume(model, image, dataclasses.replace(settings, tta=True))
    assert len(seen) == passes  # 2D: 2 slice batches x 4 flips; 3D: 4 windows x 8 flips
    seen.clear()
    without = predict_volume(model, image, settings)
    assert len(seen) == passes // 2**spatial_dims
    assert with_tta.rendered.shape == without.rendered.shape == shape
    assert not np.array_equal(with_tta.coarse, without.coarse)


def test_tta_off_gives_the_plain_models_labels():
    model, seen = _counted(2)
    image = np.random.default_rng(1).normal(size=(1, 32, 32, 2)).astype(np.float32)
    prediction = predict_volume(model, image, InferenceConfig(tta=False))
    with torch.no_grad():
        out = model(torch.from_numpy(image).permute(3, 0, 1, 2))
    assert len(seen) == 2  # one batch of two slices, and the direct call
    np.testing.assert_array_equal(prediction.coarse, out.coarse.argmax(1).permute(1, 2, 0))
    np.testing.assert_array_equal(prediction.rendered, out.logits.argmax(1).permute(1, 2, 0))
