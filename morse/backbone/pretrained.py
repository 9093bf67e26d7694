"""Load TransUNet's encoder from a local file: Google's ViT ``.npz`` or a PyTorch state dict.

Google's ``R50+ViT-B_16.npz`` (ImageNet-21k, the file TransUNet starts from) names arrays by
their Flax path and stores them in JAX layouts; :func:`google_layout` gives, for every encoder
tensor TransUNet's ``load_from`` fills, the array name and the conversion to PyTorch's layout:

================================================ ===================================== =======
npz array                                        ours                                  layout
================================================ ===================================== =======
conv_root/kernel, gn_root/scale|bias             resnet.root.conv|gn                   HWIO
block{s}/unit{u}/conv{1,2,3}/kernel, conv_proj   resnet.stages.{s-1}.{u-1}.conv*       HWIO
block{s}/unit{u}/gn{1,2,3}|gn_proj/scale|bias    resnet.stages.{s-1}.{u-1}.gn*         (C,)
embedding/kernel|bias                            vit.patch_embed                       HWIO
Transformer/posembed_input/pos_embedding         vit.pos_embed                         (1,N,D)
Transformer/encoderblock_{i}/LayerNorm_0|2       vit.blocks.{i}.norm1|norm2            (D,)
  .../MultiHeadDotProductAttention_1/query|key|value  vit.blocks.{i}.attn.to_q|to_k|to_v  (D,h,d)
  .../MultiHeadDotProductAttention_1/out         vit.blocks.{i}.attn.out_proj          (h,d,D)
  .../MlpBlock_3/Dense_0|1                       vit.blocks.{i}.mlp.linear1|linear2    (in,out)
Transformer/encoder_norm/scale|bias              vit.norm                              (D,)
================================================ ===================================== =======

Other arrays (the classifier head, the class token) are ignored. A ``.pt``/``.pth`` file must be
a state dict of this backbone (``torch.save(net.state_dict(), path)``); it must hold the same
encoder tensors, and may hold the decoder's. Position embeddings of another grid are resized
bilinearly (a leading class token dropped), as TransUNet does; any other missing array or shape
mismatch is a :class:`~morse.errors.DataError` naming the file and the fix - never a silent
fall-back to random weights. Files are read safely (``allow_pickle=False``,
``weights_only=True``).
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from morse.errors import DataError

if TYPE_CHECKING:
    from morse.backbone.transunet import TransUNet

__all__ = ["google_layout", "load_pretrained", "resize_pos_embed"]

Convert = Callable[[np.ndarray], np.ndarray]
_FIX = "use Google's R50+ViT-B_16.npz or a state dict saved from this backbone, same options"


def _conv(a: np.ndarray) -> np.ndarray:
    return a.transpose(3, 2, 0, 1)  # HWIO -> OIHW


def _dense(a: np.ndarray) -> np.ndarray:
    return a.T  # (in, out) -> (out, in)


def _attn_in(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1).T  # (D, heads, d) -> (heads*d, D)


def _attn_out(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1]).T  # (heads, d, D) -> (D, heads*d)


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _unit_layout(ours: str, theirs: str, projection: bool) -> dict[str, tuple[str, Convert]]:
    names = ["1", "2", "3", "_proj"] if projection else ["1", "2", "3"]
    table = {}
    for n in names:
        table[f"{ours}conv{n}.weight"] = (f"{theirs}conv{n}/kernel", _conv)
        table[f"{ours}gn{n}.weight"] = (f"{theirs}gn{n}/scale", _flat)
        table[f"{ours}gn{n}.bias"] = (f"{theirs}gn{n}/bias", _flat)
    return table


def _block_layout(ours: str, theirs: str) -> dict[str, tuple[str, Convert]]:
    attention = f"{theirs}MultiHeadDotProductAttention_1/"
    table = {}
    for mine, flax in (("norm1", "LayerNorm_0"), ("norm2", "LayerNorm_2")):
        table[f"{ours}{mine}.weight"] = (f"{theirs}{flax}/scale", _same)
        table[f"{ours}{mine}.bias"] = (f"{theirs}{flax}/bias", _same)
    for mine, flax, kernel in (("to_q", "query", _attn_in), ("to_k", "key", _attn_in),
                               ("to_v", "value", _attn_in), ("out_proj", "out", _attn_out)):
        table[f"{ours}attn.{mine}.weight"] = (f"{attention}{flax}/kernel", kernel)
        table[f"{ours}attn.{mine}.bias"] = (f"{attention}{flax}/bias", _flat)
    for mine, flax in (("linear1", "Dense_0"), ("linear2", "Dense_1")):
        table[f"{ours}mlp.{mine}.weight"] = (f"{theirs}MlpBlock_3/{flax}/kernel", _dense)
        table[f"{ours}mlp.{mine}.bias"] = (f"{theirs}MlpBlock_3/{flax}/bias", _same)
    return table


def google_layout(net: TransUNet) -> dict[str, tuple[str, Convert]]:
    """Our encoder's state-dict keys -> (Google ``.npz`` array name, conversion to ours)."""
    table: dict[str, tuple[str, Convert]] = {
        "resnet.root.conv.weight": ("conv_root/kernel", _conv),
        "resnet.root.gn.weight": ("gn_root/scale", _flat),
        "resnet.root.gn.bias": ("gn_root/bias", _flat),
        "vit.patch_embed.weight": ("embedding/kernel", _conv),
        "vit.patch_embed.bias": ("embedding/bias", _same),
        "vit.pos_embed": ("Transformer/posembed_input/pos_embedding", _same),
        "vit.norm.weight": ("Transformer/encoder_norm/scale", _same),
        "vit.norm.bias": ("Transformer/encoder_norm/bias", _same),
    }
    for s, stage in enumerate(net.resnet.stages):
        for u, unit in enumerate(stage):
            table.update(_unit_layout(f"resnet.stages.{s}.{u}.", f"block{s + 1}/unit{u + 1}/",
                                      unit.projection))
    for i in range(len(net.vit.blocks)):
        table.update(_block_layout(f"vit.blocks.{i}.", f"Transformer/encoderblock_{i}/"))
    return table


def resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Position embeddings of a square grid, resized bilinearly (align corners) to ``grid``.

    Args:
        pos: (1, N, D) or (1, 1 + N, D) with a leading class token (dropped), N a square.
        grid: the target (h, w).

    Returns:
        (1, h * w, D).

    >>> resize_pos_embed(torch.zeros(1, 197, 8), (2, 3)).shape
    torch.Size([1, 6, 8])
    """
    side = math.isqrt(pos.shape[1])
    if side * side != pos.shape[1]:
        pos, side = pos[:, 1:], math.isqrt(pos.shape[1] - 1)
        if side * side != pos.shape[1]:
            raise ValueError(f"{pos.shape[1] + 1} position embeddings are not a square grid")
    if (side, side) == tuple(grid):
        return pos
    square = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(square, size=tuple(grid), mode="bilinear", align_corners=True)
    return resized.flatten(2).transpose(1, 2)


def _read_npz(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The arrays ``names`` that the archive holds (safe: no pickled objects)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {n: np.asarray(archive[n], dtype=np.float32) for n in names if n in archive}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: cannot be read as a .npz of weights ({error}); {_FIX}") from error


def _from_google(path: Path, net: TransUNet) -> dict[str, torch.Tensor]:
    layout = google_layout(net)
    arrays = _read_npz(path, [name for name, _ in layout.values()])
    missing = [name for name, _ in layout.values() if name not in arrays]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} of the encoder's {len(layout)} arrays are missing, e.g. "
            f"{missing[0]!r} (vit_layers/resnet_units larger than the file's?); {_FIX}"
        )
    return {ours: torch.from_numpy(np.ascontiguousarray(convert(arrays[name])))
            for ours, (name, convert) in layout.items()}


def _from_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path}: not a loadable weights-only state dict ({reason}); "
                        f"{_FIX}") from error
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise DataError(f"{path}: expected a state dict (names -> tensors), e.g. "
                        "torch.save(backbone.state_dict(), path)")
    return dict(state)


def _check_state(path: Path, net: TransUNet, state: dict[str, torch.Tensor]) -> None:
    """Every encoder tensor present, every key known, every shape equal (pos_embed resized)."""
    own = net.state_dict()
    required = google_layout(net)
    unknown = sorted(set(state) - set(own))
    missing = sorted(set(required) - set(state))
    if unknown or missing:
        which = f"unknown key {unknown[0]!r}" if unknown else f"no {missing[0]!r}"
        raise DataError(f"{path}: not this backbone's weights ({which}, {len(unknown)} unknown, "
                        f"{len(missing)} missing); {_FIX}")
    try:
        state["vit.pos_embed"] = resize_pos_embed(state["vit.pos_embed"], net.vit.grid)
    except ValueError as error:
        raise DataError(f"{path}: vit.pos_embed: {error}; {_FIX}") from error
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise DataError(
                f"{path}: {key} has shape {tuple(value.shape)} in the file but "
                f"{tuple(own[key].shape)} in the model (hidden_size, resnet_width, in_channels "
                f"must match the file's: the .npz encoder takes 1 or 3 channels); {_FIX}"
            )


def load_pretrained(net: TransUNet, path: str | Path) -> None:
    """Load the encoder (and a ``.pt``'s decoder tensors, if any) of ``net`` from ``path``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: pretrained weights file not found; download R50+ViT-B_16.npz "
            "(storage.googleapis.com/vit_models/imagenet21k/) and set "
            "model.backbone_options.pretrained to its path, or remove the key to start at random"
        )
    if path.suffix == ".npz":
        state = _from_google(path, net)
    elif path.suffix in (".pt", ".pth"):
        state = _from_torch(path)
    else:
        raise DataError(f"{path}: unknown weights format {path.suffix!r}; give a Google ViT "
                        ".npz or a PyTorch state dict .pt/.pth")
    _check_state(path, net, state)
    net.load_state_dict(state, strict=False)
