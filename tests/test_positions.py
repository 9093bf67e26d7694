"""The render grid's code through the head's first layer, once per grid: the values of
encoding each point, kept while grid and weights are unchanged."""

import torch

from morse.renderer import positions
from morse.renderer.points import GridMap, grid_centres
from morse.renderer.positions import PointCode, PositionTable, cached_table

from helpers import small_morse


def _per_point(renderer, centres):
    code = renderer.encoding(centres)
    return code @ renderer.head.layers[0].weight[:, : code.shape[-1]].t()  # by hand


def test_table_rows_at_cell_centres_equal_encoding_each_point_on_mapped_grids():
    renderer = small_morse(2).renderer
    layer = renderer.head.layers[0]
    for size, grid_map in (((12, 7), None), ((35, 9), GridMap((0.9, 0.5), (0.05, 0.3)))):
        table = PositionTable.build(renderer.encoding, layer, size, grid_map)
        placed = grid_map or GridMap((1.0, 1.0), (0.0, 0.0))
        centres = grid_centres(size, placed).reshape(1, -1, 2)
        picked = centres[:, torch.randperm(centres.shape[1])[:50]]
        torch.testing.assert_close(table.rows(picked), _per_point(renderer, picked),
                                   atol=1e-5, rtol=1e-5)


def _counted_builds(monkeypatch) -> list:
    builds = []
    build = PositionTable.build.__func__
    monkeypatch.setattr(PositionTable, "build",
                        classmethod(lambda cls, *args: builds.append(1) or build(cls, *args)))
    return builds


def test_a_grid_asked_for_again_gets_a_table_kept_until_the_weights_change(monkeypatch):
    # 16^3 cells, 2 x 32 points a pass: a table pays only over several passes on the grid
    model = small_morse(3, render_precision="fp32").eval()
    renderer = model.renderer
    builds = _counted_builds(monkeypatch)
    image = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        encoded = model(image).logits  # a first sighting: the points encoded one by one
        assert builds == []
        from_table = model(image).logits  # the same grid again: its table
        again = model(image).logits
        assert len(builds) == 1 and torch.equal(from_table, again)
        renderer.head.layers[0].weight.mul_(0.5)  # as an optimiser step changes it
        changed = [model(image).logits for _ in range(2)]
    torch.testing.assert_close(from_table, encoded, atol=1e-5, rtol=1e-5)
    assert len(builds) == 2 and not torch.equal(from_table, changed[1])
    torch.testing.assert_close(changed[0], changed[1], atol=1e-5, rtol=1e-5)


def test_a_grid_placed_anew_every_pass_encodes_its_points_unless_they_outnumber_its_cells(
        monkeypatch):
    renderer = small_morse(2).renderer
    layer, builds = renderer.head.layers[0], _counted_builds(monkeypatch)
    maps = [GridMap((0.5, 0.5), (offset, 0.0)) for offset in (0.0, 0.1, 0.2, 0.3)]
    assert all(isinstance(cached_table(renderer, renderer.encoding, layer, (20, 20), grid_map,
                                       100), PointCode) for grid_map in maps)
    assert builds == []
    table = cached_table(renderer, renderer.encoding, layer, (20, 20), maps[0], 400)
    assert isinstance(table, PositionTable) and builds == [1]


def test_grids_too_large_for_a_table_encode_point_by_point(monkeypatch):
    renderer = small_morse(2).renderer
    monkeypatch.setattr(positions, "TABLE_ELEMENTS", 10)
    assert isinstance(cached_table(renderer, renderer.encoding, renderer.head.layers[0], (4, 4),
                                   None, 1000), PointCode)
