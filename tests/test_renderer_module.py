"""MorseRenderer on its own: one's own training loop, inference outputs, bf16, options."""

import dataclasses

import pytest
import torch
from monai.networks.nets import BasicUNet

from morse import MorseLoss, MorseOutput, MorseRenderer, RendererConfig, point_loss
from morse.backbone import FeatureTap
from morse.config import ModelConfig
from morse.renderer import precision

from helpers import small_morse

SIZES = dict(expert_width=16, head_width=16, num_frequencies=8, train_points=64, render_points=32)


def _disks(batch: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images of one disk each and their labels (B, 1, size, size)."""
    generator = torch.Generator().manual_seed(0)
    grid = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij"))
    centres = torch.randint(10, size - 10, (batch, 2, 1, 1), generator=generator)
    label = ((grid - centres).square().sum(1, keepdim=True) < 36).long()
    return label + 0.3 * torch.randn(label.shape, generator=generator), label


def test_renderer_trains_on_a_monai_basicunet_in_a_plain_loop_and_renders():
    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(8, 8, 8, 8, 8, 8))
    tap = FeatureTap(net, ["upcat_3", "upcat_2", "upcat_1"], probe_input=torch.zeros(1, 1, 32, 32))
    renderer = MorseRenderer(tap.feature_channels, num_classes=2, spatial_dims=2, **SIZES)
    criterion = MorseLoss(2)
    optimizer = torch.optim.Adam([*tap.parameters(), *renderer.parameters()], lr=3e-3)
    image, label = _disks()
    losses = []
    for _ in range(10):
        coarse, features = tap(image)
        points = renderer(features, coarse)
        loss, parts = criterion(MorseOutput(coarse, coarse, *points), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert parts["point_ce"] == pytest.approx(point_loss(points.logits, points.coords, label[:, 0])
                                              .item())
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses
    tap.eval(), renderer.eval()
    with torch.no_grad():
        coarse, features = tap(image)
        logits, rendered, gate = renderer.render(features, coarse, output_size=(48, 40))
    assert logits.shape == (4, 2, 48, 40) and rendered.shape == (4, 1, 48, 40)
    assert gate.shape == (4, 3, 48, 40) and rendered.dtype == torch.bool


def _renderer(**options) -> MorseRenderer:
    torch.manual_seed(0)
    return MorseRenderer([8, 4], 3, 2, **{**SIZES, **options}).eval()


def _inputs(size=(16, 16), dtype=torch.float32):
    generator = torch.Generator().manual_seed(1)
    features = [torch.randn(2, 8, *(s // 2 for s in size), generator=generator),
                torch.randn(2, 4, *size, generator=generator)]
    coarse = torch.randn(2, 3, *size, generator=generator)
    return [maps.to(dtype) for maps in features], coarse.to(dtype)


@pytest.mark.parametrize("upsample", [False, True])
def test_rendered_gate_sums_to_one_on_rendered_cells_and_is_zero_elsewhere(upsample):
    out = _renderer(render_upsample=upsample).render(*_inputs())
    size = (64, 64) if upsample else (16, 16)
    assert out.gate.shape == (2, 2, *size) and out.rendered.shape == (2, 1, *size)
    rendered = out.rendered.expand_as(out.gate)
    assert out.rendered.any() and out.gate[~rendered].eq(0).all()
    sums = out.gate.sum(1, keepdim=True)[out.rendered]
    torch.testing.assert_close(sums, torch.ones_like(sums))
    assert _renderer(experts=False).render(*_inputs()).gate is None


def test_two_steps_of_n_points_render_the_cells_of_one_step_of_2n():
    two = _renderer(render_points=40, render_steps=2, render_share=None).render(*_inputs())
    one = _renderer(render_points=80, render_steps=1, render_share=None).render(*_inputs())
    assert torch.equal(two.rendered, one.rendered)
    torch.testing.assert_close(two.logits, one.logits)
    torch.testing.assert_close(two.gate, one.gate)


def test_bf16_autocast_renders_the_cells_and_values_of_fp32_on_a_512_grid():
    """A head that returns the coarse logits at the point (exact in bf16 for these logits):
    any difference between the two runs comes from coordinates that lost precision."""
    renderer = _renderer(render_points=600, render_upsample=True)
    predictor = renderer.head.predictor
    with torch.no_grad():
        predictor.weight.zero_()
        predictor.bias.zero_()
        width = predictor.weight.shape[1] - 3
        predictor.weight[:, width:] = torch.eye(3)
    features, coarse = _inputs((128, 2))
    coarse = (coarse * 2).round().clamp(-2, 2)  # small integers: their interpolations are exact
    reference = renderer.render(features, coarse)  # steps on (256, 4) then (512, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = renderer.render([maps.bfloat16() for maps in features], coarse.bfloat16())
    assert out.rendered.shape == (2, 1, 512, 8) and out.rendered.any()
    assert torch.equal(out.rendered, reference.rendered)
    assert torch.equal(out.logits, reference.logits)


def test_render_precision_bf16_runs_the_point_mlps_in_bf16_and_keeps_the_output_fp32():
    renderer = _renderer(render_points=64, render_precision="fp32")
    features, coarse = _inputs((16, 16))
    seen = []
    renderer.head.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    reference = renderer.render(features, coarse)
    renderer.config = dataclasses.replace(renderer.config, render_precision="bf16")
    out = renderer.render(features, coarse)
    fp32_calls = len(seen) // 2
    assert set(seen[:fp32_calls]) == {torch.float32} and set(seen[fp32_calls:]) == {torch.bfloat16}
    assert out.logits.dtype == torch.float32
    assert torch.equal(out.rendered, reference.rendered)  # the cells come from the coarse map
    agree = (out.logits.argmax(1) == reference.logits.argmax(1)).float().mean()
    assert agree > 0.95 and (out.logits - reference.logits).abs().max() < 0.5


def test_render_precision_bf16_trains_the_point_mlps_in_bf16_with_fp32_outputs_and_gradients():
    renderer = _renderer(render_precision="bf16").train()
    features, coarse = _inputs((16, 16))
    features = [maps.requires_grad_() for maps in features]
    seen = []
    renderer.head.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    points = renderer(features, coarse)
    assert seen == [torch.bfloat16]
    assert points.logits.dtype == points.gate.dtype == torch.float32
    torch.testing.assert_close(points.gate.sum(1), torch.ones(2, 64))
    points.logits.logsumexp(1).sum().backward()
    for maps in features:
        assert maps.grad.dtype == torch.float32 and maps.grad.abs().sum() > 0
    assert all(p.grad.dtype == torch.float32 for p in renderer.parameters() if p.grad is not None)


@pytest.mark.parametrize("native", [True, False])
def test_render_precision_auto_is_bf16_only_where_the_device_has_it(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    renderer = _renderer()  # the default: auto
    assert renderer.config.render_precision == "auto"
    seen = []
    renderer.head.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    renderer.render(*_inputs((16, 16)))
    assert set(seen) == {torch.bfloat16 if native else torch.float32}


def test_unknown_or_invalid_options_name_the_fix():
    with pytest.raises(TypeError, match="did you mean 'train_points'"):
        MorseRenderer([8], 2, 2, train_point=10)
    with pytest.raises(ValueError, match="render_steps must be >= 0"):
        MorseRenderer([8], 2, 2, config=RendererConfig(render_steps=-1))
    with pytest.raises(ValueError, match="feature_channels"):
        MorseRenderer([], 2, 2)


def test_model_config_declares_no_renderer_option_of_its_own():
    renderer_fields = [field.name for field in dataclasses.fields(RendererConfig)]
    model_fields = [field.name for field in dataclasses.fields(ModelConfig)]
    assert model_fields[: len(renderer_fields)] == renderer_fields
    assert set(ModelConfig.__annotations__) == {"backbone", "backbone_options", "renderer"}
    config = ModelConfig(render_points=5, backbone="basicunet")
    assert MorseRenderer([8], 2, 2, config=config).config == RendererConfig(render_points=5)


def _conv1d_layout(state: dict) -> dict:
    """A state dict as written when the point layers were 1x1 Conv1d: (C_out, C_in, 1) weights."""
    return {key: value.unsqueeze(-1) if key.endswith("weight") and value.dim() == 2 else value
            for key, value in state.items()}


@pytest.mark.parametrize("experts", [True, False])
def test_a_state_dict_of_conv1d_point_layers_loads_and_gives_the_same_outputs(experts):
    torch.manual_seed(0)
    saved = MorseRenderer([8, 4], 3, 2, experts=experts, render_precision="fp32", **SIZES)
    old = _conv1d_layout(saved.state_dict())
    assert sum(value.dim() == 3 for value in old.values()) >= 4  # experts (or fusion), head
    torch.manual_seed(1)
    loaded = MorseRenderer([8, 4], 3, 2, experts=experts, render_precision="fp32", **SIZES)
    loaded.load_state_dict(old)
    for key, value in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    generator = torch.Generator().manual_seed(2)
    features = [torch.randn(2, 8, 4, 4, generator=generator),
                torch.randn(2, 4, 8, 8, generator=generator)]
    coarse = torch.randn(2, 3, 8, 8, generator=generator)
    trained = []
    for renderer in (saved, loaded):
        torch.manual_seed(3)
        trained.append(renderer.train()(features, coarse, torch.Generator().manual_seed(4)))
    for a, b in zip(*trained):
        assert (a is None and b is None) or torch.equal(a, b)
    with torch.no_grad():
        rendered = [renderer.eval().render(features, coarse) for renderer in (saved, loaded)]
    for a, b in zip(*rendered):
        assert (a is None and b is None) or torch.equal(a, b)


def test_a_model_checkpoint_of_conv1d_point_layers_loads_under_its_prefix():
    torch.manual_seed(0)
    saved = small_morse()
    torch.manual_seed(1)
    loaded = small_morse()
    loaded.load_state_dict(_conv1d_layout(saved.state_dict()))
    for key, value in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
