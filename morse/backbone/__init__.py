"""Segmentation backbones for MORSE.

Contract: every backbone is an ``nn.Module`` whose ``forward(image (B, C_in, *spatial))``
returns ``(logits, features)`` - ``logits (B, K, *spatial)`` at the input resolution and
``features`` a list of ``S`` tensors ``(B, c_s, *spatial / stride_s)`` ordered COARSEST
to FINEST - and which has ``feature_channels`` (``c_s``), ``feature_strides``
(``stride_s``, 1 = full resolution; an int, or one int per axis where a network down-samples
anisotropically, e.g. ``(1, 2, 2)``), ``spatial_dims``, ``in_channels`` and ``num_classes``.

* :class:`UNet` - the paper's UNet (2D and 3D), native ``(logits, features)``;
* :class:`TransUNet` - R50+ViT-B/16 hybrid with the CUP decoder (2D), native, with
  pretrained encoder weights from a local file (:mod:`morse.backbone.pretrained`);
* :class:`FeatureTap` - turns any logits-only network into a backbone with forward hooks;
* :func:`build_backbone` / :func:`available_backbones` - by name: ``unet``, ``basicunet``,
  ``unetr``, ``swinunetr``, ``dynunet``, ``transunet``.
"""

from morse.backbone.checks import check_image, first_logits
from morse.backbone.factory import (
    BackboneSpec,
    available_backbones,
    backbone_spec,
    build_backbone,
    dynunet_defaults,
    register_backbone,
)
from morse.backbone.hooks import FeatureTap
from morse.backbone.transunet import TransUNet
from morse.backbone.unet import UNet, scale_channels

__all__ = [
    "BackboneSpec",
    "FeatureTap",
    "TransUNet",
    "UNet",
    "available_backbones",
    "backbone_spec",
    "build_backbone",
    "check_image",
    "dynunet_defaults",
    "first_logits",
    "register_backbone",
    "scale_channels",
]
