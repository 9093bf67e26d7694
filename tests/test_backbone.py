"""Backbone contract tests, and MORSE on every registered backbone.

One shared tester (:class:`TestBackboneContract`, in the style of
segmentation_models.pytorch's ``tests/models/base.py``) runs over every registered
backbone x {2D, 3D} with the registry's ``small_options``; registering a backbone is all
it takes to have it tested: its contract (attributes, feature shapes, errors) and ``Morse``
on it (forward, backward, state-dict round trip, deterministic evaluation).  FeatureTap,
UNet and factory specifics follow.
"""

from __future__ import annotations

import copy
import gc
import io
import threading
import weakref

import pytest
import torch
import torch.nn as nn

from morse import Morse, MorseLoss
from morse.backbone import (
    FeatureTap,
    UNet,
    available_backbones,
    backbone_spec,
    build_backbone,
)

# NB: compare with torch.equal/allclose - torch.testing.assert_close imports
# torch.distributed.tensor on first use (seconds on a small CPU box).
IN_CHANNELS = 2
NUM_CLASSES = 3
BATCH = 2

# every spatial_dims a backbone has small options for (transunet is 2D only)
CASES = [
    (name, dims) for name in available_backbones() for dims in backbone_spec(name).small_options
]


def _build(name: str, dims: int, seed: int = 0, **extra) -> nn.Module:
    torch.manual_seed(seed)
    options = dict(backbone_spec(name).small_options.get(dims, {}))
    options.update(extra)
    return build_backbone(name, dims, IN_CHANNELS, NUM_CLASSES, **options)


def _image(name: str, dims: int, seed: int = 1, batch: int = BATCH) -> torch.Tensor:
    size = backbone_spec(name).example_size
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, IN_CHANNELS, *([size] * dims), generator=gen)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is as fast and immune to CPU oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _morse(name: str, dims: int, seed: int = 0) -> Morse:
    """A narrow MORSE renderer on the small backbone: 32 training points, 2 x 16 rendered."""
    return Morse(_build(name, dims, seed), NUM_CLASSES, dims, expert_width=8, head_width=8,
                 num_frequencies=4, train_points=32, render_points=16)


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{d}d" for n, d in CASES])
def case(request) -> tuple[str, int, nn.Module, Morse]:
    name, dims = request.param
    model = _morse(name, dims)
    return name, dims, model.backbone, model


class TestBackboneContract:
    """The backbone contract, for every registered name x spatial_dims."""

    def test_attributes(self, case):
        name, dims, net, _ = case
        assert net.spatial_dims == dims
        assert net.in_channels == IN_CHANNELS
        assert net.num_classes == NUM_CLASSES
        assert len(net.feature_channels) == len(net.feature_strides) >= 3
        assert all(isinstance(c, int) and c > 0 for c in net.feature_channels)
        assert all(isinstance(s, int) and s >= 1 for s in net.feature_strides)
        # coarsest first: strides non-increasing, ending at a fine scale
        assert net.feature_strides == sorted(net.feature_strides, reverse=True)
        assert net.feature_strides[0] > net.feature_strides[-1]

    def test_forward_shapes(self, case):
        name, dims, net, _ = case
        image = _image(name, dims)
        net.eval()
        with torch.no_grad():
            logits, features = net(image)
        spatial = tuple(image.shape[2:])
        assert logits.shape == (BATCH, NUM_CLASSES, *spatial)
        assert isinstance(features, list)
        assert len(features) == len(net.feature_channels)
        for f, c, s in zip(features, net.feature_channels, net.feature_strides):
            assert f.shape == (BATCH, c, *(n // s for n in spatial))
        sizes = [f.shape[2] for f in features]
        assert sizes == sorted(sizes), "features must be ordered coarsest to finest"

    def test_morse_training_forward_and_backward_reach_every_parameter(self, case):
        name, dims, net, model = case
        model.train()
        model.zero_grad(set_to_none=True)
        image = _image(name, dims)
        out = model(image)
        assert out.point_logits.shape == (BATCH, NUM_CLASSES, 32)
        assert out.point_coords.shape == (BATCH, 32, dims)
        assert out.gate.shape == (BATCH, len(net.feature_channels), 32)
        label = torch.randint(0, NUM_CLASSES, (BATCH, 1, *image.shape[2:]))
        MorseLoss(NUM_CLASSES)(out, label)[0].backward()
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        missing = [n for n, p in params if p.grad is None]
        assert not missing, f"no gradient reaches {missing}"
        backbone = [p for p in net.parameters() if p.requires_grad]
        for param in (backbone[0], backbone[-1], model.renderer.head.predictor.weight):
            assert param.grad.abs().sum() > 0
        model.zero_grad(set_to_none=True)

    def test_morse_state_dict_round_trip(self, case):
        name, dims, _, model = case
        other = _morse(name, dims, seed=123).eval()
        other.renderer.encoding.matrix.normal_()  # the Fourier matrix must travel too
        image = _image(name, dims)
        model.eval()
        with torch.no_grad():
            reference = model(image)
            assert not torch.allclose(other(image).logits, reference.logits)
            other.load_state_dict(model.state_dict())
            out = other(image)
        for field in ("coarse", "logits", "rendered", "gate"):
            assert torch.equal(getattr(out, field), getattr(reference, field)), field

    def test_morse_evaluation_is_deterministic(self, case):
        name, dims, net, model = case
        image = _image(name, dims)
        model.eval()
        with torch.no_grad():
            first, second = model(image), model(image)
        spatial = tuple(image.shape[2:])
        assert first.logits.shape == (BATCH, NUM_CLASSES, *spatial)
        assert first.gate.shape == (BATCH, len(net.feature_channels), *spatial)
        assert first.rendered.flatten(1).sum(1).tolist() == [32] * BATCH
        for field in ("coarse", "logits", "rendered", "gate"):
            assert torch.equal(getattr(first, field), getattr(second, field)), field

    def test_fresh_features_and_no_leak(self, case):
        name, dims, net, _ = case
        net.eval()
        with torch.no_grad():
            _, feats_a = net(_image(name, dims, seed=1))
            assert getattr(net, "active_captures", 0) == 0
            logits_b, feats_b = net(_image(name, dims, seed=2))
            assert getattr(net, "active_captures", 0) == 0
        assert all(a is not b for a, b in zip(feats_a, feats_b))
        assert not torch.allclose(feats_a[-1], feats_b[-1])
        refs = [weakref.ref(t) for t in (logits_b, *feats_b)]
        del feats_a, logits_b, feats_b
        gc.collect()
        assert all(r() is None for r in refs), "the backbone keeps references to its outputs"

    def test_errors(self, case):
        name, dims, net, _ = case
        image = _image(name, dims, batch=1)
        bad_size = image[:, :, 1:]  # one row short
        with pytest.raises(ValueError, match=r"pad|img_size"):
            net(bad_size)
        with pytest.raises(TypeError, match=r"image\.float\(\)"):
            net((image * 10).long())
        with pytest.raises(ValueError, match="in_channels"):
            net(image[:, :1])
        with pytest.raises(ValueError, match="dimensions"):
            net(image[0])

    def test_bad_module_name(self, case):
        name, dims, _, _ = case
        with pytest.raises(ValueError, match=r"no submodule named 'no_such_block'.*Close"):
            _build(name, dims, feature_modules=["no_such_block"])


# ----------------------------------------------------------------------------- factory
def test_unknown_backbone_lists_names():
    with pytest.raises(ValueError, match=r"available: \['basicunet'"):
        build_backbone("resnet", 2, 1, 2)


def test_unetr_requires_img_size():
    with pytest.raises(ValueError, match=r"img_size=\(96, 96\)"):
        build_backbone("unetr", 2, 1, 2, feature_size=4, hidden_size=24, num_heads=2)


def test_feature_modules_override():
    net = _build("basicunet", 2, feature_modules=["upcat_3", "upcat_1"])
    assert net.feature_modules == ["upcat_3", "upcat_1"]
    assert net.feature_strides == [4, 1]
    unet = _build("unet", 2, feature_modules=["downs.3", "ups.1", "ups.3"])
    assert unet.feature_channels == [64, 16, 4] and unet.feature_strides == [16, 4, 1]
    logits, feats = unet(_image("unet", 2))
    assert logits.shape[1] == NUM_CLASSES and [f.shape[1] for f in feats] == [64, 16, 4]


def test_dynunet_deep_supervision_logits():
    net = _build("dynunet", 2, deep_supervision=True, deep_supr_num=2)
    net.train()
    logits, feats = net(_image("dynunet", 2))
    assert logits.shape == (BATCH, NUM_CLASSES, 32, 32)
    assert len(feats) == 5


def test_dynunet_layout_options():
    net = _build("dynunet", 2, strides=[1, 2, 2, 2], filters=(4, 8, 8, 16))
    assert net.feature_strides == [8, 4, 2, 1] and net.feature_channels == [16, 8, 8, 4]
    net = _build("dynunet", 2, strides=[1, (2, 1), 2, 2], filters=(4, 8, 8, 16))
    assert net.feature_strides == [(8, 4), (4, 2), (2, 1), 1]


def test_tap_anisotropic_3d_stages_give_per_axis_strides():
    # nnU-Net's 3d_fullres plans on thick-slice scans: the first stage pools in plane only
    net = _build("dynunet", 3, strides=[1, (1, 2, 2), 2], filters=(4, 8, 8))
    assert net.feature_strides == [(2, 4, 4), (1, 2, 2), 1]
    logits, feats = net(torch.randn(1, IN_CHANNELS, 8, 16, 16))
    assert logits.shape[2:] == (8, 16, 16)
    assert [tuple(f.shape[2:]) for f in feats] == [(4, 4, 4), (8, 8, 8), (8, 16, 16)]
    morse = Morse(net, NUM_CLASSES, 3, expert_width=8, head_width=8, num_frequencies=4,
                  train_points=16, render_points=32)
    out = morse.eval()(torch.randn(1, IN_CHANNELS, 8, 16, 16))
    assert out.logits.shape == (1, NUM_CLASSES, 8, 16, 16)


def test_tap_checks_given_per_axis_strides():
    conv = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.MaxPool3d((1, 2, 2)),
                         nn.Upsample(scale_factor=(1, 2, 2)), nn.Conv3d(4, 2, 1))
    tap = FeatureTap(conv, ["1", "2"], feature_strides=[[1, 2, 2], [1, 1, 1]],
                     probe_input=torch.zeros(1, 1, 4, 8, 8))
    assert tap.feature_strides == [(1, 2, 2), 1]
    with pytest.raises(ValueError, match="feature_strides"):
        FeatureTap(conv, ["1", "2"], feature_strides=[2, 1], probe_input=torch.zeros(1, 1, 4, 8, 8))


# ----------------------------------------------------------------------------- UNet
def test_unet_full_width_layout():
    net2, net3 = UNet(2, 1, 4), UNet(3, 1, 4)
    for net in (net2, net3):
        assert net.feature_channels == [256, 128, 64, 32, 16]
        assert net.feature_strides == [16, 8, 4, 2, 1]
    # SSL4MIS 2D UNet (1 -> 4 classes) has 1,813,764 parameters
    assert sum(p.numel() for p in net2.parameters()) == 1_813_764
    assert sum(p.numel() for p in net3.parameters()) == 5_344_932


def test_unet_deconv_and_error_message():
    net = UNet(2, 1, 2, width=0.25, upsample="deconv").eval()
    logits, feats = net(torch.randn(1, 1, 16, 48))
    assert logits.shape == (1, 2, 16, 48) and feats[0].shape == (1, 64, 1, 3)
    with pytest.raises(ValueError, match=r"multiple of 16.*pad the image to \(32, 48\)"):
        net(torch.randn(1, 1, 20, 48))
    with pytest.raises(ValueError, match="upsample"):
        UNet(2, 1, 2, upsample="nearest")


# ----------------------------------------------------------------------------- FeatureTap
class _Toy(nn.Module):
    """Logits-only toy net: ``(B, 1, H, W) -> (B, 3, H, W)``; optional deep supervision."""

    def __init__(self, deep: bool = False, inplace_after: bool = False) -> None:
        super().__init__()
        self.enc = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.mid = nn.Conv2d(4, 6, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.head = nn.Conv2d(6, 3, 1)
        self.deep = deep
        self.inplace_after = inplace_after

    def forward(self, x):
        m = self.mid(self.pool(self.enc(x)))
        if self.inplace_after:
            m = m.relu_()
        out = self.head(self.up(m))
        return [out, m] if self.deep else out


def _toy_tap(**kw) -> FeatureTap:
    torch.manual_seed(0)
    net = _Toy(**{k: kw.pop(k) for k in ("deep", "inplace_after") if k in kw})
    return FeatureTap(net, ["mid", "up"], probe_input=torch.zeros(1, 1, 8, 8), **kw)


def test_tap_infers_channels_and_strides():
    tap = _toy_tap()
    assert (tap.feature_channels, tap.feature_strides) == ([6, 6], [2, 1])
    assert (tap.spatial_dims, tap.in_channels, tap.num_classes) == (2, 1, 3)


def test_tap_needs_channels_or_probe():
    with pytest.raises(ValueError, match="feature_channels=.*probe_input="):
        FeatureTap(_Toy(), ["mid"])
    tap = FeatureTap(_Toy(), ["mid", "up"], [6, 6])  # positional, as morse.model calls it
    assert tap.feature_strides is None and tap.spatial_dims is None
    tap(torch.randn(1, 1, 8, 8))
    assert tap.feature_strides == [2, 1] and tap.spatial_dims == 2
    with pytest.raises(ValueError, match="dimensions"):
        tap(torch.randn(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="probe found"):
        FeatureTap(_Toy(), ["mid"], feature_channels=[5], probe_input=torch.zeros(1, 1, 8, 8))


def test_tap_warns_when_not_coarsest_first():
    with pytest.warns(UserWarning, match="coarsest-first"):
        FeatureTap(_Toy(), ["up", "mid"], probe_input=torch.zeros(1, 1, 8, 8))


class _DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _Toy()

    def forward(self, x):
        return {"out": self.inner(x)}


def test_tap_logits_fn_for_dict_outputs():
    probe = torch.zeros(1, 1, 8, 8)
    with pytest.raises(TypeError, match="logits_fn="):
        FeatureTap(_DictOut(), ["inner.mid"], probe_input=probe)
    tap = FeatureTap(_DictOut(), ["inner.mid"], probe_input=probe, logits_fn=lambda o: o["out"])
    assert tap.num_classes == 3 and tap.feature_strides == [2]


def test_tap_deep_supervision_takes_first():
    logits, feats = _toy_tap(deep=True)(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 3, 8, 8) and [f.shape[1] for f in feats] == [6, 6]


def test_tap_module_name_errors():
    with pytest.raises(ValueError, match=r"Close matches: \['mid'\]"):
        FeatureTap(_Toy(), ["mdi"], probe_input=torch.zeros(1, 1, 8, 8))
    wrapped = nn.DataParallel(_Toy())
    with pytest.raises(ValueError, match="try 'module.mid'"):
        FeatureTap(wrapped, ["mid"], probe_input=torch.zeros(1, 1, 8, 8))


def test_tap_remove_and_bare_net_untouched():
    tap = _toy_tap()
    x = torch.randn(1, 1, 8, 8)
    assert torch.equal(tap.net(x), tap(x)[0])  # bare net still returns logits only
    tap.remove()
    assert all(not m._forward_hooks for m in tap.net.modules())
    with pytest.raises(RuntimeError, match="remove"):
        tap(x)


def test_tap_detects_inplace_modification():
    tap = _toy_tap(inplace_after=False)
    bad = FeatureTap(_Toy(inplace_after=True), ["mid"], feature_channels=[6], spatial_dims=2)
    with pytest.raises(RuntimeError, match="modified in place"):
        bad(torch.randn(1, 1, 8, 8))
    tap(torch.randn(1, 1, 8, 8))  # the clean one is fine
    assert bad.active_captures == 0  # the failed call left nothing behind


def test_tap_train_eval_autocast_dataparallel():
    tap = _toy_tap()
    x = torch.randn(2, 1, 8, 8)
    for mode in (True, False):
        tap.train(mode)
        logits, feats = tap(x)
        assert logits.shape == (2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, feats = tap(x)
    assert logits.dtype == torch.bfloat16 and feats[0].dtype == torch.bfloat16
    with torch.inference_mode():
        assert tap(x)[1][0].shape == (2, 6, 4, 4)
    dp_logits, dp_feats = nn.DataParallel(tap)(x)
    assert torch.equal(dp_feats[1], tap(x)[1][1])
    assert tap.active_captures == 0


def test_tap_threads_do_not_mix():
    tap = _toy_tap().eval()
    inputs = [torch.full((1, 1, 8, 8), float(i)) for i in range(4)]
    expected = [tap(x)[1][0] for x in inputs]
    results: dict[int, torch.Tensor] = {}
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        barrier.wait()
        for _ in range(20):
            results[i] = tap(inputs[i])[1][0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert torch.equal(results[i], expected[i])


def test_tap_deepcopy_and_pickle_are_independent():
    tap = _toy_tap().eval()
    x = torch.randn(1, 1, 8, 8)
    teacher = copy.deepcopy(tap)  # e.g. a mean-teacher / EMA copy
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(1.0)
    _, f_student = tap(x)
    _, f_teacher = teacher(x)
    assert not torch.allclose(f_student[0], f_teacher[0])
    buf = io.BytesIO()
    torch.save(tap, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert torch.equal(loaded(x)[1][0], f_student[0])
    teacher.remove()  # removing the copy's hooks leaves the original working
    assert len(tap(x)[1]) == 2
