"""Whole-volume inference: the rendered output lands on the volume's own voxels in 2D and 3D."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from morse.model.settings import InferenceConfig
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
    settings = InferenceConfig(patch_size=(16, 16, 16) if spatial_dims == 3 else None)
    plain = predict_volume(_band_model(spatial_dims, False), image, settings)
    upsampled = predict_volume(_band_model(spatial_dims, True), image, settings)
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
    settings = InferenceConfig(patch_size=(16, 16, 16) if spatial_dims == 3 else None)
    model = _band_model(spatial_dims, False, points=1000)  # about half of each slice or window
    prediction = predict_volume(model, image, settings, gate=True)
    scales = len(model.renderer.feature_channels)
    assert prediction.gate.shape == shape and prediction.gate.dtype == np.uint8
    np.testing.assert_array_equal(prediction.gate > 0, prediction.rendered_points)
    assert prediction.gate.max() <= scales
    assert 0 < prediction.rendered_points.mean() < 1
    assert predict_volume(model, image, settings).gate is None


def test_a_model_certain_everywhere_renders_nothing_and_gives_an_empty_gate_map():
    image = np.random.default_rng(2).normal(size=(1, 40, 36, 2)).astype(np.float32)
    model = small_morse(2, render_points=1000).eval()
    model.backbone = _Bands(model.backbone)
    prediction = predict_volume(model, image, gate=True)
    assert not prediction.rendered_points.any() and not prediction.gate.any()
    np.testing.assert_array_equal(prediction.rendered, prediction.coarse)


@pytest.mark.parametrize(("shape", "patch"), [
    ((40, 44, 36), (16, 16, 16)),  # many overlapping windows, some clamped to the far end
    ((20, 24, 12), (16, 16, 16)),  # the last axis shorter than a window: padded
    ((20, 24, 12), None),  # the whole volume, padded to a multiple of 32
])
def test_windows_on_the_volumes_own_grid_are_monai_sliding_window_inference(shape, patch):
    torch.manual_seed(0)
    model = small_morse(3, render_points=300).eval()
    image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    settings = InferenceConfig(patch_size=patch, sw_batch_size=2, overlap=0.5)

    def predictor(window):
        out = model(window, output_size=window.shape[2:])
        return out.coarse.float(), out.logits.float()

    roi = patch or tuple(-(-n // 32) * 32 for n in shape)
    with torch.no_grad():
        coarse, rendered = sliding_window_inference(
            torch.from_numpy(image)[None], roi, 2, predictor, overlap=0.5, mode="gaussian")
    for output_shape in (None, shape):  # the output grid given as the volume's own
        prediction = predict_volume(model, image, settings, output_shape=output_shape,
                                    probabilities=True)
        np.testing.assert_allclose(prediction.probabilities, rendered[0].softmax(0).numpy(),
                                   atol=1e-5)
        np.testing.assert_array_equal(prediction.coarse, coarse[0].argmax(0).numpy())


_PEAK_PROBE = """
import json, sys
from pathlib import Path
import numpy as np, torch
from morse.backbone import UNet
from morse.model import Morse
from morse.model.settings import InferenceConfig
from morse.model.volumes import predict_volume

def rss(field):
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field))

torch.manual_seed(0)
torch.set_num_threads(1)
model = Morse(UNet(3, 1, 3, width=0.25), 3, 3, render_points=256, expert_width=16,
              head_width=16, num_frequencies=8)
patch = json.loads(sys.argv[1])
settings = InferenceConfig(patch_size=patch and tuple(patch), sw_batch_size=1, overlap=0.25,
                           sw_device="cpu")
predict_volume(model, np.zeros((1, 32, 32, 32), np.float32), settings)  # libraries warmed up
growth = []
for size in json.loads(sys.argv[2]):
    image = np.random.default_rng(0).standard_normal((1, *size)).astype(np.float32)
    Path("/proc/self/clear_refs").write_text("5")  # peak resident size := current
    base = rss("VmRSS:")
    prediction = predict_volume(model, image, settings)
    growth.append(rss("VmHWM:") - base)
    del prediction
print(json.dumps(growth))
"""


def _peak_growth(patch, sizes) -> list[int]:
    """Bytes the peak resident memory of a fresh process grew by while predicting each
    volume of ``sizes`` (one after the other, the peak reset before each)."""
    import json
    import subprocess
    import sys

    # glibc maps every block over 64 kB on its own and unmaps it when freed, and keeps two
    # arenas: the peak then follows the live tensors, not freed memory the heap kept (which
    # moved this test's growth by 20 MB between runs)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "2"}
    result = subprocess.run([sys.executable, "-c", _PEAK_PROBE, json.dumps(patch),
                             json.dumps(sizes)], capture_output=True, text=True, check=True,
                            env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                    reason="needs Linux's resettable peak resident size")
def test_whole_volume_prediction_by_windows_grows_by_no_more_than_its_output_maps():
    # a large volume, so the output maps' growth (26 MB) stands above the allocator's noise;
    # predicting it whole grows by about 1 kB per voxel (460 MB)
    small, large = (32, 32, 32), (32, 32, 512)
    growth = _peak_growth([32, 32, 32], [small, large])
    # per voxel, K = 3 classes: the padded input (4 B), the stitched coarse, rendered and
    # points sums and the weights (2K + 2 float32), two int64 label maps, the bool points map
    output_bytes = (4 + (2 * 3 + 2) * 4 + 2 * 8 + 1) * (math.prod(large) - math.prod(small))
    assert growth[1] - growth[0] <= 1.5 * output_bytes + 8 * 2**20, (growth, output_bytes)
