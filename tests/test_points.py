"""Point machinery: sampling, uncertainty, training and inference point selection."""

import pytest
import torch

from morse.renderer.points import (
    cell_centres,
    margin_uncertainty,
    most_uncertain_cells,
    point_sample,
    sample_training_points,
    scatter_to_grid,
)


@pytest.mark.parametrize("shape", [(5, 7), (4, 5, 6)])
def test_point_sample_is_exact_at_cell_centres(shape):
    maps = torch.randn(2, 3, *shape)
    numel = maps[0, 0].numel()
    indices = torch.arange(numel).expand(2, -1)
    values = point_sample(maps, cell_centres(indices, shape))
    torch.testing.assert_close(values, maps.flatten(2))


@pytest.mark.parametrize("shape", [(6, 6), (4, 4, 4)])
def test_nearest_sampling_returns_grid_labels(shape):
    labels = torch.randint(0, 4, (1, 1, *shape)).float()
    coords = torch.rand(1, 50, len(shape))
    sampled = point_sample(labels, coords, mode="nearest")
    cells = (coords * torch.tensor(shape)).long()
    expected = labels[0, 0][tuple(cells[0].T)]
    torch.testing.assert_close(sampled[0, 0], expected)


def test_point_sample_rejects_wrong_coordinate_count():
    with pytest.raises(ValueError, match="3D"):
        point_sample(torch.zeros(1, 1, 4, 4, 4), torch.rand(1, 5, 2))


def test_margin_uncertainty_is_zero_on_ties_and_negative_otherwise():
    logits = torch.tensor([[[2.0, 0.5], [2.0, 3.0], [0.0, 0.0]]])  # (1, K=3, 2 points)
    torch.testing.assert_close(margin_uncertainty(logits), torch.tensor([[[0.0, -2.5]]]))


@pytest.mark.parametrize("shape", [(2, 2, 9), (3, 9, 5, 6), (1, 5, 4, 3, 6)])
def test_margin_uncertainty_equals_the_top2_of_a_sort(shape):
    logits = torch.randn(shape).round(decimals=1)  # rounding makes ties, 2 classes included
    logits[:, :, 0] = 1.5  # every class equal at one position: margin 0
    top2 = logits.sort(dim=1, descending=True).values[:, :2]
    expected = (top2[:, 1] - top2[:, 0]).unsqueeze(1)
    assert torch.equal(margin_uncertainty(logits), expected)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_importance_ratio_one_keeps_the_most_uncertain_candidates(spatial_dims):
    coarse = torch.randn(2, 3, *([8] * spatial_dims))
    points, ratio = 20, 3.0
    chosen = sample_training_points(
        coarse, points, ratio, 1.0, generator=torch.Generator().manual_seed(7)
    )
    candidates = torch.rand(
        2, int(points * ratio), spatial_dims, generator=torch.Generator().manual_seed(7)
    )
    uncertainty = margin_uncertainty(point_sample(coarse, candidates))[:, 0]
    chosen_uncertainty = margin_uncertainty(point_sample(coarse, chosen))[:, 0]
    expected = uncertainty.topk(points, dim=1).values
    torch.testing.assert_close(chosen_uncertainty.sort(1).values, expected.sort(1).values)
    # and those are more uncertain than every candidate left out
    assert (chosen_uncertainty.min(1).values >= uncertainty.sort(1).values[:, -points]).all()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_training_points_have_the_right_count_and_stay_in_unit_cube(spatial_dims):
    coarse = torch.randn(3, 4, *([6] * spatial_dims)) * 10
    coords = sample_training_points(coarse, 101, 3.0, 0.75)
    assert coords.shape == (3, 101, spatial_dims)
    assert coords.min() >= 0 and coords.max() <= 1


def test_training_points_concentrate_on_the_boundary():
    coarse = torch.zeros(1, 2, 32, 32)
    coarse[:, 1] = torch.linspace(-8, 8, 32)  # class 0 left, class 1 right: boundary at 0.5
    coords = sample_training_points(coarse, 100, 3.0, 1.0)
    # the most uncertain third of uniform candidates lies within ~1/6 of the boundary
    distance = (coords[0, :, 1] - 0.5).abs()
    assert distance.max() < 0.22 and distance.mean() < 0.11


def test_most_uncertain_cells_finds_planted_cells_and_honours_exclusion():
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 0] = 5.0
    logits[0, 0, 1, 2] = 0.0  # tie: most uncertain
    logits[0, 0, 3, 0] = 1.0  # second most uncertain
    indices, coords = most_uncertain_cells(logits, 2)
    assert sorted(indices[0].tolist()) == [6, 12]
    exclude = torch.zeros(1, 16, dtype=torch.bool)
    exclude[0, 6] = True
    indices, _ = most_uncertain_cells(logits, 1, exclude)
    assert indices.tolist() == [[12]]
    centre = cell_centres(torch.tensor([[6]]), (4, 4))
    torch.testing.assert_close(centre, torch.tensor([[[0.375, 0.625]]]))


def test_scatter_writes_only_the_given_cells():
    grid = torch.randn(2, 3, 4, 5, 6)
    indices = torch.tensor([[0, 17], [119, 5]])
    values = torch.full((2, 3, 2), 9.0)
    out = scatter_to_grid(grid, indices, values)
    changed = (out != grid).flatten(2).any(1)
    assert changed.sum() == 4
    assert out.flatten(2)[1, :, 119].eq(9).all()


def test_cell_centres_of_a_512_cell_axis_stay_exact_fp32_for_bf16_logits():
    logits = torch.randn(1, 2, 512, 3).bfloat16()
    indices, coords = most_uncertain_cells(logits, 512 * 3)
    rows, cols = indices // 3, indices % 3
    expected = torch.stack([(rows + 0.5) / 512, (cols + 0.5) / 3], dim=-1).float()
    assert coords.dtype == torch.float32
    assert torch.equal(coords, expected)


def test_point_sample_reads_bf16_maps_at_the_exact_coordinates():
    maps = torch.randn(2, 3, 512, 4).bfloat16()
    indices = torch.arange(512 * 4).expand(2, -1)
    values = point_sample(maps, cell_centres(indices, (512, 4)))
    assert values.dtype == torch.float32
    assert torch.equal(values, maps.float().flatten(2))


def test_excluded_cells_are_never_returned_even_when_more_are_asked_than_left():
    logits = torch.randn(2, 3, 4, 4)
    exclude = torch.zeros(2, 16, dtype=torch.bool)
    exclude[0, :10] = True
    exclude[1, 6:] = True
    indices, coords = most_uncertain_cells(logits, 16, exclude)
    assert indices.shape == (2, 6) and coords.shape == (2, 6, 2)
    assert not exclude.gather(1, indices).any()
    exclude[1, 0] = True  # 5 cells left in image 1: both images get 5
    indices, _ = most_uncertain_cells(logits, 16, exclude)
    assert indices.shape == (2, 5) and not exclude.gather(1, indices).any()
    assert most_uncertain_cells(logits, 4, torch.ones(2, 16, dtype=torch.bool))[0].shape == (2, 0)
