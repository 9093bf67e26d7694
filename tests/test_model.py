"""The Morse wrapper: training and inference outputs, gradients, gating, options, errors.

Forward, backward, state-dict round trip and determinism on every registered backbone are in
the shared tester of tests/test_backbone.py.
"""

import pytest
import torch

from morse import Morse, MorseLoss, RendererConfig

from helpers import ToyBackbone, small_morse


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_training_output_has_points_and_gate(spatial_dims):
    model = small_morse(spatial_dims).train()
    out = model(torch.randn(2, 1, *([16] * spatial_dims)))
    assert out.coarse.shape == (2, 3, *([16] * spatial_dims))
    assert out.point_logits.shape == (2, 3, 64)
    assert out.point_coords.shape == (2, 64, spatial_dims)
    assert out.gate.shape == (2, 3, 64)
    assert out.point_coords.min() >= 0 and out.point_coords.max() <= 1


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradients_reach_backbone_experts_gate_and_head(spatial_dims):
    torch.manual_seed(0)
    model = small_morse(spatial_dims, stochastic_gating=False).train()
    image = torch.randn(2, 1, *([16] * spatial_dims))
    label = torch.randint(0, 3, (2, 1, *([16] * spatial_dims)))
    loss, _ = MorseLoss(3)(model(image), label)
    loss.backward()
    fusion = model.renderer.fusion
    groups = {
        "backbone": model.backbone, "gate": fusion.gate, "head": model.renderer.head,
        **{f"expert{i}": e for i, e in enumerate(fusion.experts)},
    }
    for name, module in groups.items():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name


def test_point_loss_alone_trains_the_backbone_through_points():
    model = small_morse().train()
    out = model(torch.randn(1, 1, 16, 16))
    out.point_logits.sum().backward()
    assert model.backbone.stems[0].weight.grad.abs().sum() > 0


def test_dropped_experts_get_zero_weight_and_one_always_survives():
    torch.manual_seed(1)
    model = small_morse().train()
    counts = set()
    for _ in range(40):
        gate = model(torch.randn(1, 1, 16, 16)).gate
        alive = gate.abs().sum(dim=(0, 2)) > 0
        assert alive.sum() >= 1
        counts.add(int(alive.sum()))
        torch.testing.assert_close(gate.sum(1), torch.ones_like(gate.sum(1)))  # renormalised
    assert counts == {1, 2, 3}  # 0, 1 and 2 experts dropped all happen


def test_without_renormalisation_surviving_weights_keep_their_softmax_values():
    torch.manual_seed(2)
    model = small_morse(renormalize_gate=False).train()
    sums = [model(torch.randn(1, 1, 16, 16)).gate.sum(1) for _ in range(20)]
    assert any((s < 0.999).all() for s in sums)
    assert all((s <= 1 + 1e-5).all() for s in sums)


def test_inference_uses_every_expert_and_returns_the_gate_map():
    model = small_morse().eval()
    out = model(torch.randn(2, 1, 16, 16), output_size=(24, 20))
    assert out.rendered.flatten(1).sum(1).tolist() == [64, 64]  # 32 points x 2 steps
    assert out.gate.shape == (2, 3, 24, 20) and out.gate.dtype == torch.float32
    rendered = out.rendered.expand_as(out.gate)
    assert out.gate[~rendered].eq(0).all() and (out.gate[rendered] > 0).all()
    sums = out.gate.sum(1, keepdim=True)[out.rendered]
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_rendering_at_a_requested_output_size():
    model = small_morse().eval()
    out = model(torch.randn(1, 1, 16, 16), output_size=(40, 24))
    assert out.logits.shape == (1, 3, 40, 24) and out.coarse.shape == (1, 3, 16, 16)


def test_plain_backbone_honours_the_requested_output_size():
    out = small_morse(renderer=False).eval()(torch.randn(1, 1, 16, 16), output_size=(20, 24))
    assert out.logits.shape == (1, 3, 20, 24) and out.coarse.shape == (1, 3, 16, 16)


def test_chunked_rendering_matches_unchunked():
    model = small_morse(render_precision="fp32").eval()
    image = torch.randn(1, 1, 16, 16)
    whole = model(image).logits
    model.renderer.config.render_chunk = 7
    torch.testing.assert_close(model(image).logits, whole)


def test_switches_for_ablations():
    plain = small_morse(renderer=False)
    out = plain.train()(torch.randn(1, 1, 16, 16))
    assert out.point_logits is None and torch.equal(out.logits, out.coarse)
    assert plain.renderer is None and plain.eval()(torch.randn(1, 1, 16, 16)).gate is None
    assert not any(name.startswith("renderer") for name, _ in plain.named_parameters())
    concat = small_morse(experts=False)
    assert concat.train()(torch.randn(1, 1, 16, 16)).gate is None
    assert concat.eval()(torch.randn(1, 1, 16, 16)).gate is None
    no_fourier = small_morse(fourier=False)
    assert no_fourier.renderer.encoding is None
    assert not any("encoding" in key for key in no_fourier.state_dict())
    no_fourier.eval()(torch.randn(1, 1, 16, 16))


def test_renderer_options_come_as_keywords_or_one_config():
    config = RendererConfig(render_points=7, experts=False)
    model = Morse(ToyBackbone(), 3, 2, config=config, render_steps=1, head_width=8)
    assert (model.renderer.config.render_points, model.renderer.config.render_steps) == (7, 1)
    assert not model.renderer.config.experts and config.render_steps == 2  # not modified
    assert model.eval()(torch.randn(1, 1, 16, 16)).rendered.sum() == 7
    with pytest.raises(TypeError, match="did you mean 'render_points'"):
        Morse(ToyBackbone(), 3, 2, renderer=False, render_point=7)
    with pytest.raises(ValueError, match="importance_ratio must be in"):
        Morse(ToyBackbone(), 3, 2, importance_ratio=2.0)


def test_feature_channels_are_required_when_the_backbone_does_not_declare_them():
    backbone = ToyBackbone()
    del backbone.feature_channels
    with pytest.raises(ValueError, match="feature_channels"):
        Morse(backbone, 3, 2)


def test_wrong_number_of_feature_maps_is_named():
    model = Morse(ToyBackbone(), 3, 2, feature_channels=[12, 8], expert_width=8, head_width=8)
    with pytest.raises(ValueError, match="returned 3 feature maps but MORSE was built for 2"):
        model(torch.randn(1, 1, 16, 16))


def test_wrong_feature_channels_are_named():
    model = Morse(ToyBackbone(), 3, 2, feature_channels=[12, 8, 5], expert_width=8, head_width=8)
    with pytest.raises(ValueError, match="feature map 2 has 6 channels"):
        model(torch.randn(1, 1, 16, 16))


def test_features_of_the_wrong_dimensionality_are_named():
    model = Morse(ToyBackbone(3), 3, 2, expert_width=8, head_width=8)
    with pytest.raises(ValueError, match="MORSE is 2D and expects"):
        model(torch.randn(1, 1, 8, 8, 8))
    model = Morse(ToyBackbone(3), 3, 2, expert_width=8, head_width=8)
    model.backbone.spatial_dims = 3
    model.backbone.forward = lambda image: (torch.zeros(1, 3, 8, 8), [torch.zeros(1, c, 8, 8, 8)
                                            for c in (12, 8, 6)])
    with pytest.raises(ValueError, match="expected 4 dims"):
        model(torch.randn(1, 1, 8, 8))


def test_integer_image_is_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"image.float\(\)"):
        small_morse()(torch.zeros(1, 1, 16, 16, dtype=torch.int16))
