"""Subdivision rendering at inference."""

import pytest
import torch
import torch.nn.functional as F

from morse.renderer.render import plan_render_sizes, subdivision_render


def test_plan_sizes_double_then_land_on_the_output():
    assert plan_render_sizes((8, 8), 2, upsample=True) == [(16, 16), (32, 32)]
    assert plan_render_sizes((8, 8), 3, upsample=True, output_size=(20, 20)) == [
        (16, 16), (20, 20), (20, 20)]
    assert plan_render_sizes((8, 8, 4), 2) == [(8, 8, 4), (8, 8, 4)]
    with pytest.raises(ValueError, match="axes"):
        plan_render_sizes((8, 8), 2, output_size=(8, 8, 8))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_rendering_at_twice_the_size_leaves_certain_cells_as_upsampled_coarse(spatial_dims):
    coarse = torch.randn(2, 3, *([6] * spatial_dims)) * 4
    output_size = [12] * spatial_dims
    logits, rendered = subdivision_render(
        coarse, lambda c: torch.full((c.shape[0], 3, c.shape[1]), 100.0), num_points=10,
        steps=2, output_size=output_size,
    )
    assert logits.shape == (2, 3, *output_size)
    assert rendered.shape == (2, 1, *output_size)
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    upsampled = F.interpolate(coarse, size=output_size, mode=mode, align_corners=False)
    keep = ~rendered.expand_as(logits)
    torch.testing.assert_close(logits[keep], upsampled[keep])
    assert logits[~keep].eq(100.0).all()
    assert rendered.flatten(1).sum(1).tolist() == [20, 20]  # 2 steps x 10, never twice


def test_no_cell_is_rendered_twice_in_one_pass():
    seen = []

    def point_fn(coords):
        seen.append(coords)
        return torch.zeros(coords.shape[0], 2, coords.shape[1])  # keeps cells uncertain

    subdivision_render(torch.zeros(1, 2, 8, 8), point_fn, num_points=20, steps=3)
    all_coords = torch.cat(seen, dim=1)[0]
    assert torch.unique(all_coords, dim=0).shape[0] == 60


def test_upsampled_steps_map_rendered_cells_to_the_output_grid():
    coarse = torch.randn(1, 2, 4, 4)
    logits, rendered = subdivision_render(
        coarse, lambda c: torch.zeros(1, 2, c.shape[1]), num_points=1, steps=2, upsample=True
    )
    assert logits.shape == (1, 2, 16, 16)
    # one cell of the 8x8 step covers 2x2 output cells, plus one 16x16 cell (maybe inside)
    assert 1 <= rendered.sum() <= 5


def test_zero_steps_returns_resized_coarse():
    coarse = torch.randn(1, 2, 4, 4)
    logits, rendered = subdivision_render(coarse, None, 5, steps=0, output_size=(8, 8))
    assert logits.shape == (1, 2, 8, 8) and not rendered.any()
