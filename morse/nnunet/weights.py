"""Warm start: a plain nnU-Net checkpoint into a MORSE network, the renderer starting fresh.

nnU-Net's ``-pretrained_weights`` loader requires every key of the network in the file, which a
checkpoint of ``nnUNetTrainer`` cannot meet (it has no ``renderer.*``). ``load_plain_weights``
takes its place for MORSE networks and hands any other network to nnU-Net's loader.
"""

from __future__ import annotations

import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights as nnunet_loader
from torch import nn

from morse.errors import CheckpointError
from morse.nnunet.network import MorseUNet

__all__ = ["load_plain_weights", "unwrap"]


def unwrap(network: nn.Module) -> nn.Module:
    """The module under DDP's ``module`` and torch.compile's ``_orig_mod``."""
    for attribute in ("module", "_orig_mod"):
        network = getattr(network, attribute, network)
    return network


def load_plain_weights(network: nn.Module, fname: str, verbose: bool = False) -> None:
    """Load ``fname`` (an nnU-Net checkpoint) into ``network``.

    For a ``MorseUNet``: every encoder and decoder tensor must be in the file with its shape,
    except the segmentation layers, which are loaded where their shapes match (same classes:
    the finished model's own head) and otherwise start fresh as in nnU-Net's loader. Renderer
    tensors are loaded when the file has them (a MORSE checkpoint) and start fresh otherwise.
    Any other network goes to nnU-Net's loader unchanged.
    """
    model = unwrap(network)
    if not isinstance(model, MorseUNet):
        nnunet_loader(network, fname, verbose=verbose)
        return
    saved = torch.load(fname, map_location="cpu", weights_only=False)
    weights = saved["network_weights"] if "network_weights" in saved else saved
    own = model.state_dict()
    backbone = [key for key in own if not key.startswith("renderer.")]
    missing = [key for key in backbone if key not in weights and ".seg_layers." not in key]
    wrong = [key for key in backbone if key in weights and ".seg_layers." not in key
             and weights[key].shape != own[key].shape]
    if missing or wrong:
        first = (missing or wrong)[0]
        raise CheckpointError(
            f"{fname} does not fit this network's plan: {len(missing)} encoder/decoder tensors "
            f"missing and {len(wrong)} of another shape (first: {first}); warm-start from a "
            "checkpoint trained with the same plans and configuration"
        )
    fits = {key: value for key, value in weights.items()
            if key in own and value.shape == own[key].shape}
    model.load_state_dict({**own, **fits})
    fresh_head = sum(".seg_layers." in key and key not in fits for key in backbone)
    renderer = sum(key.startswith("renderer.") for key in fits)
    print(f"Warm start from {fname}: {len(fits) - renderer} encoder/decoder tensors loaded"
          + (f" ({fresh_head} segmentation-layer tensors of another shape start fresh)"
             if fresh_head else "")
          + (f", renderer loaded ({renderer} tensors)" if renderer else ", renderer starts fresh"))
