"""The renderer's fast point path (split weights, first layers on coarse maps, cell tables)
computes what the straightforward path does: its layers on concatenated point features."""

import pytest
import torch

from morse.renderer import module, reading
from morse.renderer.module import MorseRenderer
from morse.renderer.points import point_sample
from morse.renderer.render import subdivision_render

from helpers import small_morse

SIZES = dict(expert_width=16, head_width=16, num_frequencies=8, dropout=0.0,
             stochastic_gating=False, render_margin=None, render_share=None,
             render_precision="fp32")


def _mlp(layers, rows):
    for layer in layers:
        rows = torch.relu(layer(rows))
    return rows


def straightforward_point_logits(renderer, features, coarse, coords):
    """The reference: sample every map, run every expert on all its rows, stack, concatenate;
    logits (B, K, P), gate (B, S, P)."""
    fusion, head = renderer.fusion, renderer.head
    sampled = [point_sample(maps, coords).transpose(1, 2) for maps in features]
    experts = [list(expert)[::2] for expert in fusion.experts]
    # (B, P, S, width)
    outputs = torch.stack([_mlp(expert, x) for expert, x in zip(experts, sampled)], 2)
    weights = fusion.gate(outputs.flatten(2)).softmax(dim=-1)
    fused = _mlp(list(fusion.fuse[0])[::2], (outputs * weights.unsqueeze(-1)).sum(dim=2))
    at_points = point_sample(coarse, coords).transpose(1, 2)
    hidden = torch.cat([renderer.encoding(coords), fused], -1)
    for layer in head.layers:
        hidden = torch.relu(layer(torch.cat([hidden, at_points], -1)))
    logits = head.predictor(torch.cat([hidden, at_points], -1))
    return logits.transpose(1, 2), weights.transpose(1, 2)


def _setup(spatial_dims, batch=2):
    torch.manual_seed(0)
    renderer = MorseRenderer([16, 20, 6], 3, spatial_dims, render_points=50, **SIZES)
    sizes = [2, 4, 8] if spatial_dims == 3 else [4, 8, 16]
    generator = torch.Generator().manual_seed(1)
    features = [torch.randn(batch, c, *[s] * spatial_dims, generator=generator)
                for c, s in zip([16, 20, 6], sizes)]
    coarse = torch.randn(batch, 3, *[sizes[-1]] * spatial_dims, generator=generator) * 3
    # 100 points, width 16: the two coarse maps (16 or 8 and 64 cells, 16 and 20 channels)
    # enter their experts' first layer as maps, the finest (256 or 512 cells, 6 channels) does
    # not; the corners test the border padding
    coords = torch.rand(batch, 100, spatial_dims, generator=generator)
    coords[:, :2] = torch.tensor([0.0, 1.0]).view(1, 2, 1)
    return renderer, features, coarse, coords


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_fast_point_logits_equal_the_straightforward_path(spatial_dims):
    renderer, features, coarse, coords = _setup(spatial_dims)
    renderer.eval()
    inputs = renderer.prepare(features, coarse, coords.shape[1])
    assert inputs.entered == [True, True, False]
    with torch.no_grad():
        logits, gate = renderer.point_logits(features, coarse, coords)
        expected_logits, expected_gate = straightforward_point_logits(
            renderer, features, coarse, coords)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gate, expected_gate, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_fast_point_path_gives_the_straightforward_gradients(spatial_dims):
    renderer, features, coarse, coords = _setup(spatial_dims)
    renderer.train()
    weight = torch.randn(2, 3, 100)
    grads = []
    for fn in (renderer.point_logits,
               lambda f, c, x: straightforward_point_logits(renderer, f, c, x)):
        leaves = [maps.clone().requires_grad_() for maps in [*features, coarse]]
        renderer.zero_grad()
        logits, gate = fn(leaves[:-1], leaves[-1], coords)
        ((logits * weight).sum() + gate[:, 0].sum()).backward()
        grads.append([leaf.grad for leaf in leaves]
                     + [p.grad.clone() for p in renderer.parameters()])
    for fast, reference in zip(*grads):
        torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_rendering_equals_rendering_with_the_straightforward_point_function(spatial_dims):
    renderer, features, coarse, _ = _setup(spatial_dims)
    renderer.eval()
    assert renderer.prepare(features, coarse, 100).entered == [True, True, False]
    with torch.no_grad():
        out = renderer.render(features, coarse, output_size=[20] * spatial_dims)
        expected = subdivision_render(
            coarse,
            lambda coords, active: straightforward_point_logits(renderer, features, coarse, coords),
            50, 2, output_size=[20] * spatial_dims)
    assert torch.equal(out.rendered, expected[1])
    torch.testing.assert_close(out.logits, expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.gate, expected[2], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_maps_on_the_render_grid_are_read_by_cell_as_sampling_reads_them(
        spatial_dims, monkeypatch):
    renderer, features, coarse, _ = _setup(spatial_dims)
    renderer.eval()
    reads = []
    cell_rows = reading._cell_rows
    monkeypatch.setattr(reading, "_cell_rows",
                        lambda maps, *args: reads.append(maps.shape) or cell_rows(maps, *args))
    with torch.no_grad():
        out = renderer.render(features, coarse)  # on the coarse map's own grid
        expected = subdivision_render(
            coarse,
            lambda coords, active: straightforward_point_logits(renderer, features, coarse, coords),
            50, 2)
    # the finest features and the coarse logits lie on that grid
    assert reads == [features[-1].shape, coarse.shape]
    assert torch.equal(out.rendered, expected[1])
    torch.testing.assert_close(out.logits, expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.gate, expected[2], atol=1e-6, rtol=1e-5)


def test_only_coarse_maps_at_least_as_wide_as_the_experts_enter_them():
    renderer = MorseRenderer([8, 16, 16], 3, 2, **SIZES)  # expert width 16
    features = [torch.randn(1, 8, 2, 2), torch.randn(1, 16, 2, 2), torch.randn(1, 16, 16, 16)]
    entered = renderer.prepare(features, torch.randn(1, 3, 16, 16), num_points=100).entered
    assert entered == [False, True, False]  # too narrow; entered; more cells than points


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("chunk", [None, 7])
def test_adaptive_render_on_active_rows_only_equals_the_full_pass(spatial_dims, chunk):
    """Skipping the rows that only fill the batch changes no rendered value or gate weight."""
    torch.manual_seed(3)
    model = small_morse(spatial_dims, render_points=40, render_margin=0.5, render_share=None,
                        render_precision="fp32",
                        render_chunk=chunk).eval()
    image = torch.randn(3, 1, *([16] * spatial_dims))
    _, features = model.backbone(image)
    scale = torch.tensor([0.05, 1.0, 200.0]).view(3, *([1] * (spatial_dims + 1)))
    coarse = torch.randn(3, 3, *([16] * spatial_dims)) * scale  # few to most cells certain
    renderer = model.renderer
    with torch.no_grad():
        fast = renderer.render(features, coarse)
        inputs = renderer.prepare(features, coarse, 80)

        def every_row(coords, active):  # the fill rows too
            return renderer._point_logits(inputs, coords)

        full = subdivision_render(coarse, every_row, 40, 2, max_margin=0.5,
                                  max_share=renderer.config.render_share)
    counts = fast.rendered.flatten(1).sum(1)
    assert counts.min() < counts.max()  # images need different numbers of rows
    torch.testing.assert_close(fast.logits, full[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.gate, full[2], rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.rendered, full[1])


def test_point_logits_of_fill_rows_only_are_zeros():
    """A chunk can hold fill rows only (no active row): zeros, and no sampling error."""
    model = small_morse(2, render_precision="fp32").eval()
    _, features = model.backbone(torch.randn(2, 1, 16, 16))
    coarse = torch.randn(2, 3, 16, 16)
    renderer = model.renderer
    inputs = renderer.prepare(features, coarse, 10)
    coords = torch.rand(2, 5, 2)
    with torch.no_grad():
        logits, gate = renderer._point_logits(inputs, coords, torch.zeros(2, 5, dtype=torch.bool))
        some = torch.tensor([[True, False, True, False, False], [False] * 5])
        partial, _ = renderer._point_logits(inputs, coords, some)
        full, _ = renderer._point_logits(inputs, coords)
    assert logits.shape == (2, 3, 5) and not logits.any() and not gate.any()
    torch.testing.assert_close(partial[0][:, [0, 2]], full[0][:, [0, 2]])
    assert not partial[1].any()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_reading_maps_through_cell_tables_equals_grid_sample_with_gradients(spatial_dims):
    renderer = MorseRenderer([16, 20, 6], 3, spatial_dims, **SIZES).train()
    shapes = [[2] * spatial_dims, [4] * spatial_dims, [8] * spatial_dims]
    features = [torch.randn(2, c, *s, requires_grad=True) for c, s in zip([16, 20, 6], shapes)]
    coarse = torch.randn(2, 3, *([8] * spatial_dims), requires_grad=True)
    coords = torch.rand(2, 40, spatial_dims)
    coords[0, :2] = torch.tensor([0.0, 1.0]).unsqueeze(1)  # the borders
    active = torch.rand(2, 40) > 0.3
    results = []
    for tables in (True, False):
        inputs = renderer.prepare(features, coarse, 40, tables=tables)
        tabled = [True, True, False]  # entered; 2^D; 8^D has more than 40 (3D: 320) cells
        assert [t is not None for t in inputs.tables] == (tabled if tables else [False] * 3)
        logits, gate = renderer._point_logits(inputs, coords)
        some, _ = renderer._point_logits(inputs, coords, active)
        grads = torch.autograd.grad((logits.sum() + gate.sum() + some.sum()),
                                    [*features, coarse])
        results.append((logits, gate, some, grads))
    (logits, gate, some, grads), (logits_g, gate_g, some_g, grads_g) = results
    torch.testing.assert_close(logits, logits_g, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gate, gate_g, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(some, some_g, rtol=1e-5, atol=1e-5)
    for grad, grad_g in zip(grads, grads_g):
        torch.testing.assert_close(grad, grad_g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("margin", [None, 0.5])
def test_point_mlps_on_a_few_rows_at_a_time_give_the_values_of_all_at_once(
        monkeypatch, spatial_dims, margin):
    torch.manual_seed(4)
    model = small_morse(spatial_dims, render_points=40, render_margin=margin,
                        render_share=None, render_precision="fp32").eval()
    image = torch.randn(3, 1, *([16] * spatial_dims))
    with torch.no_grad():
        whole = model(image)
        monkeypatch.setattr(module, "MLP_ROWS", 7)  # 7 rows (fewer than a batch row) at a time
        pieces = model(image)
    assert torch.equal(pieces.rendered, whole.rendered)
    torch.testing.assert_close(pieces.logits, whole.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pieces.gate, whole.gate, rtol=1e-5, atol=1e-5)
