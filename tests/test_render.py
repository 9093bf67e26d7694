"""Subdivision rendering at inference."""

import pytest
import torch
import torch.nn.functional as F

from morse.renderer.points import GridMap
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
    logits, rendered, gate = subdivision_render(
        coarse, lambda c, active: torch.full((c.shape[0], 3, c.shape[1]), 100.0), num_points=10,
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
    assert gate is None  # the point function gives no gate


def test_no_cell_is_rendered_twice_in_one_pass():
    seen = []

    def point_fn(coords, active):
        seen.append(coords)
        return torch.zeros(coords.shape[0], 2, coords.shape[1])  # keeps cells uncertain

    subdivision_render(torch.zeros(1, 2, 8, 8), point_fn, num_points=20, steps=3)
    all_coords = torch.cat(seen, dim=1)[0]
    assert torch.unique(all_coords, dim=0).shape[0] == 60


def test_upsampled_steps_map_rendered_cells_to_the_output_grid():
    coarse = torch.randn(1, 2, 4, 4)
    logits, rendered, _ = subdivision_render(
        coarse, lambda c, active: torch.zeros(1, 2, c.shape[1]), num_points=1, steps=2,
        upsample=True,
    )
    assert logits.shape == (1, 2, 16, 16)
    # one cell of the 8x8 step covers 2x2 output cells, plus one 16x16 cell (maybe inside)
    assert 1 <= rendered.sum() <= 5


def test_zero_steps_returns_resized_coarse():
    coarse = torch.randn(1, 2, 4, 4)
    logits, rendered, gate = subdivision_render(coarse, None, 5, steps=0, output_size=(8, 8))
    assert logits.shape == (1, 2, 8, 8) and not rendered.any() and gate is None


def _recorder(seen, classes=2):
    """A point function that records its coordinates and keeps the cells maximally unsure."""

    def point_fn(coords, active):
        seen.append(coords)
        return torch.zeros(coords.shape[0], classes, coords.shape[1])

    return point_fn


def test_steps_asking_for_more_cells_than_are_left_render_each_cell_once():
    seen = []
    _, rendered, _ = subdivision_render(torch.randn(2, 2, 8, 8), _recorder(seen), 30, steps=4)
    assert [coords.shape[1] for coords in seen] == [64]  # 4 x 30 asked, all 64 cells once
    for image in range(2):
        assert torch.unique(torch.cat(seen, 1)[image], dim=0).shape[0] == 64
    assert rendered.all()


@pytest.mark.parametrize("output_size", [None, (9, 13)])
def test_two_steps_of_n_points_render_exactly_one_step_of_2n(output_size):
    """Rendered cells leave the ranking and no other cell changes, so values never re-rank."""
    coarse = torch.randn(2, 3, 8, 8)
    first, second = [], []
    two = subdivision_render(coarse, _recorder(first, 3), 10, steps=2, output_size=output_size)
    one = subdivision_render(coarse, _recorder(second, 3), 20, steps=1, output_size=output_size)
    assert torch.equal(two[0], one[0]) and torch.equal(two[1], one[1])
    assert torch.equal(torch.cat(first, 1), second[0])  # the next 10 cells of one ranking


def test_rendered_cells_of_a_coarser_step_map_to_output_cells_by_their_centres():
    torch.manual_seed(0)
    seen = []
    _, rendered, _ = subdivision_render(
        torch.randn(1, 2, 2, 3), _recorder(seen), 6, steps=2, upsample=True, output_size=(6, 7)
    )  # steps on (4, 6) then (6, 7): non-integer ratios 1.5 and 7/6
    expected = torch.zeros(6, 7, dtype=torch.bool)
    step_one = (seen[0][0] * torch.tensor([4, 6])).long()  # cells of the (4, 6) grid
    centres = torch.stack(torch.meshgrid((torch.arange(6) + 0.5) / 6, (torch.arange(7) + 0.5) / 7,
                                         indexing="ij"), -1)
    under = (centres * torch.tensor([4, 6])).long()  # the (4, 6) cell under each output centre
    for row, col in step_one.tolist():
        expected |= (under[..., 0] == row) & (under[..., 1] == col)
    for row, col in (seen[1][0] * torch.tensor([6, 7])).long().tolist():
        expected[row, col] = True
    assert torch.equal(rendered[0, 0], expected)


def test_gate_map_holds_the_last_write_and_zero_where_nothing_was_rendered():
    def point_fn(coords, active):
        gate = torch.full((coords.shape[0], 2, coords.shape[1]), len(calls) + 1.0)
        calls.append(coords)
        return torch.zeros(coords.shape[0], 3, coords.shape[1]), gate

    calls = []
    _, rendered, gate = subdivision_render(
        torch.randn(1, 3, 4, 4), point_fn, 5, steps=2, upsample=True
    )
    assert gate.shape == (1, 2, 16, 16) and gate.dtype == torch.float32
    assert gate.masked_select(~rendered).eq(0).all()
    last = torch.zeros(16 * 16, dtype=torch.bool)
    last[(calls[1][0] * 16).long().matmul(torch.tensor([16, 1]))] = True
    last = last.view(16, 16)
    assert gate[0, :, last].eq(2).all()  # the second step's writes win
    earlier = rendered[0, 0] & ~last
    assert earlier.sum() >= 4 * 4 and gate[0, :, earlier].eq(1).all()  # 5 cells x 4, <= 5 hit


def test_with_a_margin_only_uncertain_cells_are_rendered_and_certain_ones_keep_coarse():
    coarse = torch.zeros(2, 3, 6, 6)
    coarse[:, 0] = 5.0  # margin 5: certain
    uncertain = torch.zeros(2, 6, 6, dtype=torch.bool)
    uncertain[0, 1, :3] = True  # image 0: 3 uncertain cells, fewer than N
    uncertain[1, 2:4] = True  # image 1: 12, more than N
    coarse[:, 1][uncertain] = 4.0 + torch.rand(int(uncertain.sum()))  # margins in (0, 1)

    def point_fn(coords, active):
        return torch.full((2, 3, coords.shape[1]), 7.0), torch.ones(2, 2, coords.shape[1])

    logits, rendered, gate = subdivision_render(coarse, point_fn, 4, steps=2, max_margin=2.0)
    assert torch.equal(rendered[0, 0], uncertain[0])  # all 3, no certain filler
    assert rendered[1, 0].sum() == 8 and not (rendered[1, 0] & ~uncertain[1]).any()
    keep = ~rendered.expand_as(logits)
    assert torch.equal(logits[keep], coarse[keep]) and logits[~keep].eq(7.0).all()
    assert gate.masked_select(~rendered).eq(0).all() and gate.masked_select(rendered).eq(1).all()
    fixed = subdivision_render(coarse, point_fn, 4, steps=2)[1]
    assert fixed.flatten(1).sum(1).tolist() == [8, 8]  # the fixed budget renders certain cells


def test_active_rows_are_marked_only_when_some_row_only_fills_the_batch():
    """With a margin, ``point_fn`` gets the rows that count; None when all of them do."""
    coarse = torch.zeros(2, 3, 6, 6)
    coarse[:, 0] = 5.0  # certain everywhere but the cells below
    coarse[:, 1, 0, :4] = 4.5  # 4 uncertain cells per image
    coarse[1, 1, 1, :2] = 4.5  # 2 more in image 1
    seen = []

    def point_fn(coords, active):
        seen.append(active)
        return torch.full((2, 3, coords.shape[1]), 7.0)

    subdivision_render(coarse, point_fn, 4, steps=1, max_margin=2.0)
    subdivision_render(coarse, point_fn, 8, steps=1, max_margin=2.0)
    assert seen[0] is None  # 4 rows each, all uncertain
    assert seen[1].tolist() == [[True] * 4 + [False] * 2, [True] * 6]


def test_a_share_caps_the_cells_of_each_step_on_small_grids():
    seen = []
    _, rendered, _ = subdivision_render(torch.randn(1, 2, 8, 8), _recorder(seen), 100, steps=2,
                                        max_share=0.125)
    assert [coords.shape[1] for coords in seen] == [16] and rendered.sum() == 16  # 2 x 8


def _position_logits(coords, active):
    """A point function whose logits depend on where the point is (3 classes)."""
    return torch.stack([coords.sum(-1), coords[..., 0] * 3, -coords[..., -1]], dim=1)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_an_identity_grid_map_renders_what_no_map_renders(spatial_dims):
    coarse = torch.randn(2, 3, *([6] * spatial_dims))
    size = [9] * spatial_dims
    plain = subdivision_render(coarse, _position_logits, 20, 2, output_size=size)
    identity = GridMap((1.0,) * spatial_dims, (0.0,) * spatial_dims)
    mapped = subdivision_render(coarse, _position_logits, 20, 2, output_size=size,
                                grid_map=identity)
    torch.testing.assert_close(mapped[0], plain[0])
    assert torch.equal(mapped[1], plain[1])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_a_grid_map_renders_a_window_as_the_whole_grid_renders_it(spatial_dims):
    """The top-left quarter, rendered through a map onto the whole coarse map, holds the
    values and rendered cells of the whole rendering there (every uncertain cell rendered)."""
    coarse = torch.randn(1, 3, *([8] * spatial_dims))
    whole = subdivision_render(coarse, _position_logits, 10**4, 1, output_size=[16] * spatial_dims,
                               max_margin=0.5)
    window = subdivision_render(coarse, _position_logits, 10**4, 1, output_size=[8] * spatial_dims,
                                max_margin=0.5, grid_map=GridMap((0.5,) * spatial_dims,
                                                                  (0.0,) * spatial_dims))
    corner = (slice(None), slice(None), *[slice(0, 8)] * spatial_dims)
    torch.testing.assert_close(window[0], whole[0][corner])
    assert torch.equal(window[1], whole[1][corner]) and window[1].any()


def test_a_grid_map_needs_an_output_size_and_no_upsampling():
    identity = GridMap((1.0, 1.0), (0.0, 0.0))
    with pytest.raises(ValueError, match="output_size"):
        subdivision_render(torch.randn(1, 2, 4, 4), _position_logits, 4, 1, grid_map=identity)
    with pytest.raises(ValueError, match="upsample"):
        subdivision_render(torch.randn(1, 2, 4, 4), _position_logits, 4, 1, upsample=True,
                           output_size=(8, 8), grid_map=identity)


def test_static_shapes_ask_n_rows_every_step_and_render_the_same_cells_and_values():
    """With a margin, ragged images and steps that run out of cells, the export path (N rows
    always, none skipped) writes exactly what the default path writes."""
    coarse = torch.zeros(2, 3, 6, 6)
    coarse[:, 0] = 5.0
    uncertain = torch.zeros(2, 6, 6, dtype=torch.bool)
    uncertain[0, 1, :3] = True  # 3 uncertain cells: fewer than N
    uncertain[1, 2:4] = True  # 12: more than N, all rendered by the third step
    coarse[:, 1][uncertain] = 4.0 + torch.rand(int(uncertain.sum()))
    shapes: dict[bool, list[int]] = {True: [], False: []}

    def point_fn(static):
        def values(coords, active):
            shapes[static].append(coords.shape[1])
            assert active is None or not static  # static shapes: every row, no mask
            position = coords.sum(-1).unsqueeze(1)  # (B, 1, N): each row its own value
            return 9.0 * position.expand(-1, 3, -1).clone(), position.expand(-1, 2, -1).clone()
        return values

    default = subdivision_render(coarse, point_fn(False), 5, steps=4, max_margin=2.0)
    static = subdivision_render(coarse, point_fn(True), 5, steps=4, max_margin=2.0,
                                static_shapes=True)
    assert shapes == {False: [12], True: [20]}  # 4 steps of 5 on one grid: one round
    for a, b in zip(default, static):
        assert torch.equal(a, b)
    assert torch.equal(static[1][:, 0], uncertain)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_rendering_writes_its_own_grid_never_the_callers_logits(layout):
    coarse = torch.randn(2, 3, 6, 5)
    if layout == "channels_last":
        coarse = coarse.to(memory_format=torch.channels_last)
    before = coarse.clone()
    logits, rendered, _ = subdivision_render(
        coarse, lambda c, active: torch.full((c.shape[0], 3, c.shape[1]), 9.0), num_points=4,
        steps=2)
    assert torch.equal(coarse, before)
    assert logits[rendered.expand_as(logits)].eq(9.0).all()
    assert int(rendered.sum()) == 2 * 2 * 4
