"""The render grid's code through the head's first layer, once per grid: the values of
encoding each point, kept while grid and weights are unchanged."""

import torch

from morse.renderer import positions
from morse.renderer.points import GridMap, grid_centres
from morse.renderer.positions import PositionTable, cached_table

from helpers import small_morse


def _per_point(renderer, centres):
    code = renderer.encoding(centres)
    return code @ renderer.head.layers[0].weight[:, : code.shape[-1]].t()


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


def test_a_renderers_table_is_kept_between_passes_and_rebuilt_when_weights_change(
        monkeypatch):
    model = small_morse(3, render_precision="fp32").eval()
    renderer = model.renderer
    builds = []
    build = PositionTable.build.__func__
    monkeypatch.setattr(PositionTable, "build",
                        classmethod(lambda cls, *args: builds.append(1) or build(cls, *args)))
    image = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        first = model(image).logits
        again = model(image).logits
        assert len(builds) == 1 and torch.equal(first, again)
        renderer.head.layers[0].weight.mul_(0.5)  # as an optimiser step changes it
        changed = model(image).logits
    assert len(builds) == 2 and not torch.equal(first, changed)
    table = cached_table(renderer, renderer.encoding, renderer.head.layers[0], (16, 16, 16), None)
    torch.testing.assert_close(table.values, PositionTable.build(
        renderer.encoding, renderer.head.layers[0], (16, 16, 16), None).values)


def test_grids_too_large_for_a_table_encode_point_by_point(monkeypatch):
    renderer = small_morse(2).renderer
    monkeypatch.setattr(positions, "TABLE_ELEMENTS", 10)
    assert cached_table(renderer, renderer.encoding, renderer.head.layers[0], (4, 4), None) is None
