"""Orientation and spacing: training grids in RAS at one spacing, predictions on each scan's
own grid (oblique, anisotropic, any axis order), rendered there directly."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from morse import Morse
from morse.config import Config, DataConfig
from morse.data.geometry import AxisMap, network_axes, plan_geometry, to_network
from morse.data.volume import Volume
from morse.errors import DataError
from morse.inference.trained import predict_case


def _rotation(degrees_x: float, degrees_z: float) -> np.ndarray:
    ax, az = np.radians(degrees_x), np.radians(degrees_z)
    about_x = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    about_z = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return about_z @ about_x


def _scan(spacing, shape, rotation, order=(0, 1, 2), flip_axis=None) -> Volume:
    """A scan of an off-centre ellipsoid: image = 1 - |(x - c) / r|^2 (world mm), label = image
    > 0. Its array axes are the world's in ``order``, one flipped, rotated and anisotropic."""
    columns = rotation @ np.diag(spacing)
    affine = np.eye(4)
    affine[:3, :3] = columns[:, list(order)]
    shape = tuple(shape[a] for a in order)
    affine[:3, 3] = -affine[:3, :3] @ (np.array(shape) - 1) / 2  # centred on the origin
    if flip_axis is not None:
        affine[:3, 3] += affine[:3, flip_axis] * (shape[flip_axis] - 1)
        affine[:3, flip_axis] *= -1
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    image = 1 - (((world - [4.0, -3.0, 2.0]) / [17.0, 11.0, 8.0]) ** 2).sum(-1)
    return Volume(image[None].astype(np.float32), (image > 0).astype(np.int64), affine)


class IntensityBackbone(nn.Module):
    """Logits [0, 8 x image] (class 1 where the image is positive) and two feature maps."""

    feature_channels = [1, 1]

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device and a dtype

    def forward(self, image: torch.Tensor):
        pool = F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d
        logits = torch.cat([torch.zeros_like(image), 8 * image], 1) + self.anchor
        return logits, [pool(image, 2), image]


def _pass_through_model(spatial_dims: int) -> Morse:
    """MORSE whose head returns the coarse logits read at each point: what it renders on a
    scan's voxels is the backbone's answer there, so the test sees where points land."""
    model = Morse(IntensityBackbone(spatial_dims), 2, spatial_dims, expert_width=4,
                  head_width=4, num_frequencies=2, render_points=10**6, render_margin=8.0)
    head = model.renderer.head
    with torch.no_grad():
        for layer in [*head.layers, head.predictor]:
            layer.weight.zero_()
            layer.bias.zero_()
        head.predictor.weight[:, -2:] = torch.eye(2)
    return model.eval()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


TRAINED = {  # what the training data were: RAS, another spacing
    2: {"orientation": "RAS", "spacing": [1.4, 1.4, 2.0], "slice_axis": 2},
    3: {"orientation": "RAS", "spacing": [1.6, 1.6, 1.6], "slice_axis": None},
}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_an_oblique_anisotropic_scan_in_another_axis_order_is_segmented_on_its_own_grid(
    spatial_dims,
):
    scan = _scan((0.8, 1.1, 2.5), (70, 52, 22), _rotation(20, 10), order=(2, 0, 1),
                 flip_axis=1)
    cfg = Config(data=DataConfig(spatial_dims=spatial_dims, patch_size=[32, 32, 32]))
    prediction = predict_case(_pass_through_model(spatial_dims), cfg, scan, "cpu",
                              TRAINED[spatial_dims])
    assert prediction.rendered.shape == scan.spatial_shape
    label = scan.label.astype(bool)
    for output in (prediction.rendered, prediction.coarse):
        assert _dice(output.astype(bool), label) > 0.97
        assert (output.astype(bool) == label).mean() > 0.99
    assert prediction.rendered_points.any()  # the renderer wrote on the scan's voxels


def test_a_scan_stored_in_another_axis_order_gets_the_same_labels_voxel_for_voxel():
    """The same voxels stored transposed and flipped (another affine, same world) meet the
    same network input, so every voxel gets the same label."""
    scan = _scan((0.9, 0.9, 2.0), (40, 44, 18), _rotation(15, 0))
    axes = AxisMap((1, 2, 0), (True, False, True))
    stored = Volume(axes.forward(scan.image, leading=1), axes.forward(scan.label),
                    axes.affine(scan.affine, scan.spatial_shape))
    cfg = Config(data=DataConfig(spatial_dims=3, patch_size=[32, 32, 32]))
    model = _pass_through_model(3)
    first = predict_case(model, cfg, scan, "cpu", TRAINED[3])
    second = predict_case(model, cfg, stored, "cpu", TRAINED[3])
    assert np.array_equal(axes.forward(first.rendered), second.rendered)
    assert np.array_equal(axes.forward(first.coarse), second.coarse)


def test_the_network_grid_is_ras_at_the_target_spacing_and_keeps_every_voxel_in_place():
    scan = _scan((0.8, 1.1, 2.5), (60, 40, 20), _rotation(0, 0), order=(1, 2, 0), flip_axis=0)
    geometry = plan_geometry([scan], target=[1.6, 1.6, 1.6])
    net = to_network(scan, geometry)
    assert np.allclose(net.spacing, 1.6, atol=0.05)
    directions = net.affine[:3, :3] / np.linalg.norm(net.affine[:3, :3], axis=0)
    assert np.allclose(directions, np.eye(3))  # R, A, S along the array's axes
    corners = [np.array([0, 0, 0, 1]), np.array([*(np.array(scan.spatial_shape) - 1), 1])]
    first, last = (scan.affine @ c for c in corners)
    span = net.affine @ [-0.5, -0.5, -0.5, 1], net.affine @ [*(np.array(
        net.spatial_shape) - 0.5), 1]
    low, high = np.minimum(first, last)[:3], np.maximum(first, last)[:3]
    spacing = np.array(scan.spacing)[[2, 0, 1]]  # R, A, S sizes of the stored axes
    assert np.allclose(np.minimum(*span)[:3], low - spacing / 2, atol=1e-6)  # same field of view
    assert np.allclose(np.maximum(*span)[:3], high + spacing / 2, atol=1e-6)
    # the label follows the image: the ellipsoid's voxels are where the image is positive
    assert ((net.image[0] > 0) == net.label.astype(bool)).mean() > 0.98


def test_planning_takes_the_median_spacing_and_slices_across_the_coarsest_axis():
    scans = [_scan(s, (8, 8, 8), np.eye(3)) for s in
             [(1.0, 1.0, 3.0), (0.8, 0.8, 5.0), (0.6, 0.9, 4.0)]]
    geometry = plan_geometry(scans, spatial_dims=2)
    assert geometry == {"orientation": "RAS", "spacing": [0.8, 0.9, 4.0], "slice_axis": 2}
    sagittal = _scan((3.0, 1.0, 1.0), (8, 8, 8), np.eye(3))
    assert plan_geometry([sagittal], spatial_dims=2)["slice_axis"] == 0
    assert plan_geometry([sagittal], spatial_dims=2, slice_axis=1)["slice_axis"] == 1
    assert plan_geometry(scans, spatial_dims=3)["slice_axis"] is None


def test_2d_resampling_keeps_each_cases_own_slices():
    scan = _scan((0.5, 0.5, 3.3), (40, 40, 9), np.eye(3))
    net = to_network(scan, plan_geometry([scan], target=[1.0, 1.0, 2.0], spatial_dims=2))
    assert net.spatial_shape == (20, 20, 9)


def test_a_scan_without_voxel_size_or_orientation_is_refused_with_the_fix():
    unknown = replace(_scan((1, 1, 1), (8, 8, 8), np.eye(3)), spacing_known=False)
    with pytest.raises(DataError, match="data.target_spacing: null"):
        to_network(unknown, TRAINED[3])
    flat = Volume(np.zeros((1, 8, 8, 8)), None, np.diag([1.0, 1.0, 0.0, 1.0]))
    with pytest.raises(DataError, match="qform/sform"):
        network_axes(flat.affine, TRAINED[3], "flat.nii.gz")
