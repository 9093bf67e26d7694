"""Whole-volume inference: the rendered output lands on the volume's own voxels in 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morse.model.volumes import predict_volume

from helpers import small_morse


class _Bands(torch.nn.Module):
    """Adds three vertical class bands (along the second spatial axis) to the toy's logits."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.inner = backbone
        self.feature_channels = backbone.feature_channels

    def forward(self, image: torch.Tensor):
        logits, features = self.inner(image)
        width = image.shape[3]
        band = (torch.arange(width, dtype=torch.float32) * 3 // width).long()
        bands = torch.nn.functional.one_hot(band, 3).float().T * 8.0  # (3, W)
        bands = bands.view(1, 3, 1, width, *([1] * (image.dim() - 4)))
        return 0.01 * logits + bands, features


def _band_model(spatial_dims: int, upsample: bool, points: int = 64):
    torch.manual_seed(0)
    # the fixed budget: the bands are certain everywhere, so the adaptive one renders nothing
    model = small_morse(spatial_dims, render_points=points, render_upsample=upsample,
                        render_margin=None)
    model.backbone = _Bands(model.backbone)
    return model.eval()


@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (40, 36, 3)), (3, (20, 24, 16))])
def test_render_upsample_keeps_predictions_on_the_volumes_own_voxels(spatial_dims, shape):
    image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    patch = (16, 16, 16) if spatial_dims == 3 else None
    plain = predict_volume(_band_model(spatial_dims, False), image, patch_size=patch)
    upsampled = predict_volume(_band_model(spatial_dims, True), image, patch_size=patch)
    assert upsampled.rendered.shape == shape
    # every voxel the renderer did not touch keeps the coarse label: nothing is shifted
    assert np.all((upsampled.rendered == upsampled.coarse) | upsampled.rendered_points)
    np.testing.assert_array_equal(upsampled.rendered, plain.rendered)
    np.testing.assert_array_equal(upsampled.coarse, plain.coarse)


@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (40, 36, 3)), (3, (20, 24, 16))])
def test_gate_map_names_the_dominant_expert_exactly_where_the_renderer_worked(
    spatial_dims, shape
):
    image = np.random.default_rng(1).normal(size=(1, *shape)).astype(np.float32)
    patch = (16, 16, 16) if spatial_dims == 3 else None
    model = _band_model(spatial_dims, False, points=1000)  # about half of each slice or window
    prediction = predict_volume(model, image, patch_size=patch, gate=True)
    scales = len(model.renderer.feature_channels)
    assert prediction.gate.shape == shape and prediction.gate.dtype == np.uint8
    np.testing.assert_array_equal(prediction.gate > 0, prediction.rendered_points)
    assert prediction.gate.max() <= scales
    assert 0 < prediction.rendered_points.mean() < 1
    assert predict_volume(model, image, patch_size=patch).gate is None


def test_a_model_certain_everywhere_renders_nothing_and_gives_an_empty_gate_map():
    image = np.random.default_rng(2).normal(size=(1, 40, 36, 2)).astype(np.float32)
    model = small_morse(2, render_points=1000).eval()
    model.backbone = _Bands(model.backbone)
    prediction = predict_volume(model, image, gate=True)
    assert not prediction.rendered_points.any() and not prediction.gate.any()
    np.testing.assert_array_equal(prediction.rendered, prediction.coarse)
