"""The Morse wrapper: training outputs, gradients, gating, determinism, errors, state."""

import io

import pytest
import torch

from morse import Morse, MorseLoss, build_backbone
from morse.backbone import available_backbones, backbone_spec

from toys import ToyBackbone, small_morse


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
    groups = {
        "backbone": model.backbone, "gate": model.fusion.gate, "head": model.head,
        **{f"expert{i}": e for i, e in enumerate(model.fusion.experts)},
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


def test_all_experts_are_used_at_inference_and_evaluation_is_deterministic():
    model = small_morse().eval()
    image = torch.randn(2, 1, 16, 16)
    first, second = model(image), model(image)
    torch.testing.assert_close(first.logits, second.logits, rtol=0, atol=0)
    torch.testing.assert_close(first.rendered, second.rendered)
    assert first.rendered.flatten(1).sum(1).tolist() == [64, 64]  # 32 points x 2 steps
    fused, gate = model.fusion([torch.randn(1, c, 5) for c in model.feature_channels])
    assert (gate > 0).all()


def test_rendering_at_a_requested_output_size():
    model = small_morse().eval()
    out = model(torch.randn(1, 1, 16, 16), output_size=(40, 24))
    assert out.logits.shape == (1, 3, 40, 24) and out.coarse.shape == (1, 3, 16, 16)


def test_plain_backbone_honours_the_requested_output_size():
    out = small_morse(renderer=False).eval()(torch.randn(1, 1, 16, 16), output_size=(20, 24))
    assert out.logits.shape == (1, 3, 20, 24) and out.coarse.shape == (1, 3, 16, 16)


def test_chunked_rendering_matches_unchunked():
    model = small_morse().eval()
    image = torch.randn(1, 1, 16, 16)
    whole = model(image).logits
    model.render_chunk = 7
    torch.testing.assert_close(model(image).logits, whole)


def test_state_dict_round_trip_includes_the_encoding_matrix():
    model = small_morse().eval()
    assert "encoding.matrix" in model.state_dict()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    other = small_morse().eval()
    other.encoding.matrix.normal_()
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    image = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(other(image).logits, model(image).logits)


def test_switches_for_ablations():
    plain = small_morse(renderer=False).train()
    out = plain(torch.randn(1, 1, 16, 16))
    assert out.point_logits is None and torch.equal(out.logits, out.coarse)
    assert not any(name.startswith(("head", "fusion")) for name, _ in plain.named_parameters())
    concat = small_morse(experts=False).train()
    assert concat(torch.randn(1, 1, 16, 16)).gate is None
    no_fourier = small_morse(fourier=False)
    assert no_fourier.encoding is None and "encoding.matrix" not in no_fourier.state_dict()
    no_fourier.eval()(torch.randn(1, 1, 16, 16))


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
    with pytest.raises(ValueError, match="2D model expects"):
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


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", available_backbones())
def test_morse_runs_on_every_registered_backbone(name, spatial_dims):
    spec = backbone_spec(name)
    if spatial_dims not in spec.small_options:
        pytest.skip(f"{name} has no {spatial_dims}D variant")
    options = dict(spec.small_options[spatial_dims])
    backbone = build_backbone(name, spatial_dims, 1, 3, **options)
    model = Morse(backbone, 3, spatial_dims, expert_width=8, head_width=8, num_frequencies=4,
                  train_points=32, render_points=16)
    image = torch.randn(2, 1, *([spec.example_size] * spatial_dims))
    out = model.train()(image)
    loss, _ = MorseLoss(3)(out, torch.randint(0, 3, (2, 1, *image.shape[2:])))
    loss.backward()
    assert out.gate.shape == (2, len(backbone.feature_channels), 32)
    assert model.fusion.experts[0][0].weight.grad is not None
    assert model.eval()(image).logits.shape == (2, 3, *image.shape[2:])
