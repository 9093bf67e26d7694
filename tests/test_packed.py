"""bf16 inference with packed point layers: the values of bf16 autocast, and nothing left over.

Each test that packs runs twice: with oneDNN's packed GEMMs where this CPU has them
(AVX512-BF16 or AMX), and on any CPU with a stand-in that keeps the bf16 weight unpacked and
multiplies with ``F.linear``, so which layers get packed, how blocks meet one GEMM, the fused
ReLU and the clean-up are tested everywhere.
"""

from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F

from morse import MorseRenderer
from morse.renderer import module, packed
from morse.renderer.experts import PointMlp, StochasticExperts
from morse.renderer.head import ImplicitPointHead
from morse.renderer.points import cell_table, corner_weights, sample_table

ONEDNN = packed.packing_available(torch.device("cpu"))

SIZES = dict(expert_width=32, head_width=32, num_frequencies=8, render_points=48,
             render_precision="bf16")


def _portable_of(cls, layer, rows_hint, first=0):
    bias = None if layer.bias is None else layer.bias.detach().to(torch.bfloat16)
    return cls(layer.weight.detach()[:, first:].to(torch.bfloat16), bias)


def _portable_call(self, rows, relu=False):
    out = F.linear(rows.to(torch.bfloat16), self.weight, self.bias)
    return out.relu_() if relu else out


@dataclass
class Packing:
    kind: str
    calls: list[int] = field(default_factory=list)
    """One entry per call of a packed layer."""


@pytest.fixture(params=["onednn", "portable"])
def packing(request, monkeypatch) -> Packing:
    """Packing on, of either kind, its calls counted."""
    if request.param == "onednn" and not ONEDNN:
        pytest.skip("this CPU has no native bf16 or torch no oneDNN packing")
    if request.param == "portable":
        monkeypatch.setattr(packed.PackedLinear, "of", classmethod(_portable_of))
        monkeypatch.setattr(packed.PackedLinear, "__call__", _portable_call)
    state = Packing(request.param)
    call = packed.PackedLinear.__call__
    monkeypatch.setattr(packed.PackedLinear, "__call__",
                        lambda self, *args, **kw: state.calls.append(1) or call(self, *args, **kw))
    monkeypatch.setattr(module, "packing_available", lambda device: True)
    return state


def _close_in_bf16(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Within a few bf16 roundings (8 bits of mantissa) of the largest value."""
    scale = expected.float().abs().max().item()
    assert (actual.float() - expected.float()).abs().max().item() <= 0.03 * scale + 1e-3


def _experts_and_head() -> tuple[StochasticExperts, ImplicitPointHead]:
    torch.manual_seed(0)
    return (StochasticExperts([24, 8], width=32).eval(),
            ImplicitPointHead(in_channels=40, num_classes=3, hidden_channels=32))


def _rows() -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    maps = [torch.randn(300, 24, generator=generator), torch.randn(300, 8, generator=generator)]
    return maps, torch.randn(300, 8, generator=generator), torch.randn(300, 3, generator=generator)


def _point_net(experts, head, maps, code, coarse):
    fused, gate = experts(maps)
    return head([code, fused], coarse), gate


def test_packed_layers_give_the_values_of_bf16_autocast(packing):
    experts, head = _experts_and_head()
    rows = _rows()
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected, expected_gate = _point_net(experts, head, *rows)
        with packed.packed_layers(experts, 64), packed.packed_layers(head, 64):
            logits, gate = _point_net(experts, head, *rows)
    assert logits.dtype == torch.bfloat16 and gate.dtype == torch.float32
    _close_in_bf16(logits, expected)
    _close_in_bf16(gate, expected_gate)
    assert len(packing.calls) == 2 + 2 + 1 + 1 + 3 + 1  # experts, gate, fusion, head
    if packing.kind == "onednn":
        assert (logits.float() - expected.float()).abs().max() > 0  # oneDNN's GEMMs ran


def test_packed_relu_is_fused_into_the_layer(packing):
    mlp = PointMlp(16, 32, num_layers=1)
    rows = torch.randn(50, 16)
    with torch.no_grad(), packed.packed_layers(mlp, 64):
        out = mlp(rows)
    assert out.min() == 0 and out.max() > 0 and packing.calls
    _close_in_bf16(out, torch.relu(mlp[0](rows)))


def test_packed_layers_are_removed_on_exit_and_on_error(packing):
    experts, head = _experts_and_head()
    layers = [layer for layer in experts.modules() if isinstance(layer, torch.nn.Linear)]
    with torch.no_grad():
        with packed.packed_layers(experts, 64):
            assert all(packed.packed_of(layer) is not None for layer in layers)
        assert all(packed.packed_of(layer) is None for layer in layers)
        with pytest.raises(KeyError), packed.packed_layers(experts, 64):
            raise KeyError("boom")
    assert all(packed.packed_of(layer) is None for layer in layers)
    assert set(experts.state_dict()) == set(_experts_and_head()[0].state_dict())


def test_packed_layers_refuse_autograd():
    experts, _ = _experts_and_head()
    with pytest.raises(RuntimeError, match="torch.no_grad"), packed.packed_layers(experts, 64):
        pass


def _render(renderer):
    generator = torch.Generator().manual_seed(2)
    features = [torch.randn(2, 24, 8, 8, generator=generator),
                torch.randn(2, 8, 16, 16, generator=generator)]
    coarse = torch.randn(2, 3, 16, 16, generator=generator)
    with torch.inference_mode():
        return renderer.render(features, coarse)


def test_bf16_rendering_without_autograd_packs_and_renders_what_autocast_renders(
        monkeypatch, packing):
    torch.manual_seed(0)
    renderer = MorseRenderer([24, 8], 3, 2, **SIZES).eval()
    with monkeypatch.context() as unpacked:
        unpacked.setattr(module, "packing_available", lambda device: False)
        reference = _render(renderer)
    assert not packing.calls
    out = _render(renderer)
    assert packing.calls
    assert torch.equal(out.rendered, reference.rendered) and out.rendered.any()
    assert out.logits.dtype == torch.float32
    _close_in_bf16(out.logits, reference.logits)
    _close_in_bf16(out.gate, reference.gate)
    assert all(packed.packed_of(layer) is None for layer in renderer.modules())


def test_fp32_rendering_never_packs(packing):
    torch.manual_seed(0)
    renderer = MorseRenderer([24, 8], 3, 2, **{**SIZES, "render_precision": "fp32"}).eval()
    _render(renderer)
    assert not packing.calls


@pytest.mark.parametrize("size", [(6, 5), (4, 3, 5)])
def test_a_bf16_cell_table_reads_the_fp32_values_to_bf16_rounding(size):
    maps = torch.randn(2, 16, *size)
    points, images = torch.rand(40, len(size)), torch.randint(0, 2, (40,))
    corners = corner_weights(points, images, size)
    reference = sample_table(cell_table(maps), *corners)
    table = cell_table(maps, torch.bfloat16)
    assert table.dtype == torch.bfloat16
    values = sample_table(table, *corners)
    assert values.dtype == torch.bfloat16
    _close_in_bf16(values, reference)


def test_packed_weights_are_kept_between_passes_and_packed_again_when_they_change(
        packing, monkeypatch):
    mlp = PointMlp(16, 32, num_layers=1)
    packs = []
    of = packed.PackedLinear.of.__func__
    monkeypatch.setattr(packed.PackedLinear, "of",
                        classmethod(lambda cls, *args: packs.append(1) or of(cls, *args)))
    rows = torch.randn(50, 16)
    with torch.no_grad():
        for _ in range(2):
            with packed.packed_layers(mlp, 64):
                mlp(rows)
        assert len(packs) == 1  # the second pass reused the first one's packing
        mlp[0].weight.mul_(-1)  # an in-place update, as an optimiser step makes
        with packed.packed_layers(mlp, 64):
            flipped = mlp(rows)
        expected_flipped = torch.relu(mlp[0](rows))
        mlp[0].weight = torch.nn.Parameter(torch.zeros(32, 16))  # a replaced tensor
        with packed.packed_layers(mlp, 64):
            bias_only = mlp(rows)
        expected_bias_only = torch.relu(mlp[0](rows))
    assert len(packs) == 3
    _close_in_bf16(flipped, expected_flipped)
    _close_in_bf16(bias_only, expected_bias_only)
