"""TransUNet specifics: layout, grayscale input, size checks, pretrained weights from files.

The shared backbone contract (shapes, gradients, state dict, errors) runs on the small variant
in ``tests/test_backbone.py``; the ``.npz`` here is written by hand in Google's JAX layouts, so
the loader's transposes are checked against an independent writer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from morse.backbone import TransUNet, build_backbone
from morse.backbone.pretrained import google_layout
from morse.backbone.transunet import TRANSUNET_SMALL
from morse.cli.main import main
from morse.errors import DataError

K = 4


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(seed: int = 0, in_channels: int = 1, **options) -> TransUNet:
    torch.manual_seed(seed)
    return TransUNet(2, in_channels, K, **{**TRANSUNET_SMALL, **options}).eval()


def image(size: int = 32, channels: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(seed))


def to_google(net: TransUNet, path, class_token: bool = True) -> None:
    """Write ``net``'s encoder as Google's .npz would hold it (JAX layouts, a class token)."""
    state = net.state_dict()
    heads = net.vit.blocks[0].attn.num_heads
    arrays = {}
    for ours, (name, _) in google_layout(net).items():
        value = state[ours]
        if value.ndim == 4:  # OIHW -> HWIO
            value = value.permute(2, 3, 1, 0)
        elif "MultiHeadDotProductAttention_1/out/kernel" in name:  # (D, h*d) -> (h, d, D)
            value = value.t().reshape(heads, -1, value.shape[0])
        elif "MultiHeadDotProductAttention_1" in name and name.endswith("kernel"):
            value = value.t().reshape(value.shape[1], heads, -1)  # (h*d, D) -> (D, h, d)
        elif "MultiHeadDotProductAttention_1" in name and "/out/" not in name:
            value = value.reshape(heads, -1)  # q/k/v bias (h*d,) -> (h, d)
        elif name.endswith("kernel"):  # dense (out, in) -> (in, out)
            value = value.t()
        elif name.endswith("pos_embedding") and class_token:
            value = torch.cat([torch.randn(1, 1, value.shape[2]), value], dim=1)
        arrays[name] = value.numpy()
    arrays["head/kernel"] = np.zeros((3, 2), np.float32)  # classifier arrays are ignored
    np.savez(path, **arrays)


# ----------------------------------------------------------------------------- layout
def test_full_size_is_transunets_r50_vit_b16():
    net = build_backbone("transunet", 2, 1, 9)
    assert net.feature_channels == [512, 256, 128, 64, 16]
    assert net.feature_strides == [16, 8, 4, 2, 1]
    assert net.vit.pos_embed.shape == (1, 14 * 14, 768) and len(net.vit.blocks) == 12
    # TransUNet's published 105.28 M; MONAI's unused cross-attention norms are frozen
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable == 105_277_081
    first_conv = next(v for v in net.state_dict().values() if v.ndim == 4)
    assert first_conv.shape[1] == 1, "checkpoints must show the image's channel count first"


def test_small_variant_shapes():
    logits, features = small()(image())
    assert logits.shape == (2, K, 32, 32)
    assert [tuple(f.shape[1:]) for f in features] == [
        (32, 2, 2), (32, 4, 4), (16, 8, 8), (8, 16, 16), (8, 32, 32)
    ]


def test_grayscale_is_repeated_to_three_channels():
    gray, rgb = small(seed=0, in_channels=1), small(seed=5, in_channels=3)
    rgb.load_state_dict({k: v for k, v in gray.state_dict().items() if k != "to_rgb.weight"})
    x = image()
    with torch.no_grad():
        assert torch.equal(gray(x)[0], rgb(x.repeat(1, 3, 1, 1))[0])


def test_two_dimensional_only_and_sizes_are_checked():
    with pytest.raises(ValueError, match="2D only.*unetr"):
        build_backbone("transunet", 3, 1, K, **TRANSUNET_SMALL)
    with pytest.raises(ValueError, match="multiples of 16"):
        small(img_size=40)
    with pytest.raises(ValueError, match=r"built for spatial size \(32, 32\) \(img_size\)"):
        small()(image(size=48))
    with pytest.raises(ValueError, match="decoder_channels must be four"):
        small(decoder_channels=(8, 8, 8))


# ----------------------------------------------------------------------------- weights
def test_google_npz_loads_the_encoder(tmp_path):
    source, path = small(seed=0), tmp_path / "R50+ViT-B_16.npz"
    to_google(source, path)
    x = image()
    with torch.no_grad():
        tokens, skips = source.encode(x)
        assert not torch.allclose(small(seed=1).encode(x)[0], tokens)
        loaded_tokens, loaded_skips = small(seed=1, pretrained=str(path)).encode(x)
    assert torch.allclose(loaded_tokens, tokens, rtol=0, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(loaded_skips, skips))


def test_position_embeddings_of_another_grid_are_resized_bilinearly(tmp_path):
    source = small(seed=0, img_size=64)  # 4 x 4 tokens
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    ramp = (rows / 3 + 2 * cols / 3).reshape(1, 16, 1)  # linear in the normalised position
    with torch.no_grad():
        source.vit.pos_embed.copy_(ramp.expand_as(source.vit.pos_embed))
    to_google(source, tmp_path / "w.npz")
    loaded = small(seed=1, img_size=32, pretrained=tmp_path / "w.npz")  # 2 x 2 tokens
    corners = torch.tensor([0.0, 2.0, 1.0, 3.0]).reshape(1, 4, 1)
    assert torch.allclose(loaded.vit.pos_embed, corners.expand(1, 4, 64), atol=1e-6)


def test_state_dict_file_loads_encoder_and_decoder(tmp_path):
    source = small(seed=0)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    loaded = small(seed=1, pretrained=str(tmp_path / "weights.pt"))
    with torch.no_grad():
        assert torch.equal(loaded(image())[0], source(image())[0])


class _Pickled:
    pass


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "pretrained weights file not found"),
        ("array_missing", "arrays are missing, e.g. 'Transformer/encoderblock_1/"),
        ("wrong_width", "vit.patch_embed.weight has shape (32, 128, 1, 1) in the file"),
        ("pickled", "not a loadable weights-only state dict"),
        ("not_npz", "cannot be read as a .npz"),
        ("suffix", "unknown weights format '.bin'"),
    ],
)
def test_bad_weight_files_are_one_line_naming_the_file(tmp_path, case, message):
    path = tmp_path / {"pickled": "w.pt", "suffix": "w.bin"}.get(case, "w.npz")
    if case == "array_missing":
        to_google(small(vit_layers=1), path)
    elif case == "wrong_width":
        to_google(small(hidden_size=32), path)
    elif case == "pickled":
        torch.save({"weights": _Pickled()}, path)
    elif case in ("not_npz", "suffix"):
        path.write_text("not weights")
    with pytest.raises(DataError) as error:
        small(pretrained=path)
    text = str(error.value)
    assert str(path) in text and message in text and "\n" not in text


def train_small_transunet(root, weights, run) -> int:
    """``morse train synapse_transunet`` for one step, small variant, encoder from ``weights``."""
    options = json.dumps({**TRANSUNET_SMALL, "pretrained": str(weights)})
    return main(["train", "synapse_transunet", f"data.root={root}", "data.slice_size=[32,32]",
                 f"model.backbone_options={options}", "train.iterations=1",
                 "model.train_points=32", "model.render_points=32", "-o", str(run)])


def test_pretrained_errors_through_morse_train_exit_2(tmp_path, synapse_root, capsys):
    wrong = tmp_path / "wrong.npz"
    to_google(small(hidden_size=32), wrong)
    for weights, problem in ((tmp_path / "absent.npz", "not found"), (wrong, "has shape")):
        code = train_small_transunet(synapse_root, weights, tmp_path / weights.stem)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert f"{weights}: " in err[0] and problem in err[0]


def test_a_trained_run_evaluates_without_its_pretrained_file(tmp_path, synapse_root):
    weights, run = tmp_path / "R50+ViT-B_16.npz", tmp_path / "run"
    to_google(small(), weights)
    assert train_small_transunet(synapse_root, weights, run) == 0
    weights.unlink()  # e.g. evaluating on another machine
    assert main(["evaluate", str(run)]) == 0
