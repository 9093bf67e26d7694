"""Build backbones by name: our UNet and MONAI networks wrapped with :class:`FeatureTap`.

Every backbone returned by :func:`build_backbone` follows the contract of
:mod:`morse.backbone`: ``forward(image) -> (logits, features)`` with features coarsest
first, plus ``feature_channels``, ``feature_strides``, ``spatial_dims``,
``in_channels`` and ``num_classes``.

Default tapped modules (MONAI 1.6.1 names; all give strides 16/8/4/2/1 except UNETR,
whose ViT grid is stride 16 and whose decoders give 8/4/2/1):

=========== ============================================== ==============================
name        tapped modules (coarsest first)                feature channels
=========== ============================================== ==============================
unet        bottleneck + 4 Up outputs (native, no hooks)   256, 128, 64, 32, 16 (x width)
basicunet   down_4, upcat_4, upcat_3, upcat_2, upcat_1     f[4], f[3], f[2], f[1], f[5]
unetr       decoder5, decoder4, decoder3, decoder2         8F, 4F, 2F, F
swinunetr   decoder5, decoder4, decoder3, decoder2,        8F, 4F, 2F, F, F
            decoder1
dynunet     bottleneck, upsamples.0 .. upsamples.{d-1}     filters[::-1]
transunet   CUP decoder maps (native, 2D only)             512, 256, 128, 64, 16
=========== ============================================== ==============================

A new backbone is added with :func:`register_backbone`; the shared tests in
``tests/test_backbone.py`` then cover it automatically (using ``small_options``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from monai.networks.nets import UNETR, BasicUNet, DynUNet, SwinUNETR

from morse.backbone.hooks import FeatureTap
from morse.backbone.transunet import TRANSUNET_SMALL, build_transunet
from morse.backbone.unet import UNet
from morse.config.choices import BACKBONES
from morse.shapes import per_axis

__all__ = [
    "BackboneSpec",
    "available_backbones",
    "backbone_spec",
    "build_backbone",
    "register_backbone",
]

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry.

    Attributes:
        build: ``build(spatial_dims, in_channels, num_classes, feature_modules, **options)``
            returning a module that follows the backbone contract (``feature_modules`` is
            ``None`` for the defaults).
        small_options: per ``spatial_dims``, options for a tiny configuration that runs
            on a 32 (2D) / 32^3 (3D) image - used by the tests and smoke runs.
        example_size: a valid spatial size (per axis) for ``small_options``.
        description: one line for listings.
    """

    build: Builder
    small_options: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    example_size: int = 32
    description: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, spec: BackboneSpec, *, overwrite: bool = False) -> None:
    """Add ``spec`` under ``name`` (lower case) to the registry."""
    key = name.lower()
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"backbone '{key}' is already registered (pass overwrite=True)")
    _REGISTRY[key] = spec


def available_backbones() -> list[str]:
    """Registered backbone names, sorted.

    >>> available_backbones()
    ['basicunet', 'dynunet', 'swinunetr', 'transunet', 'unet', 'unetr']
    """
    return sorted(_REGISTRY)


BACKBONES.bind(available_backbones)  # model.backbone allows what is registered, when loaded


def backbone_spec(name: str) -> BackboneSpec:
    """The registry entry of ``name``; ValueError listing the names if unknown."""
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown backbone '{name}'; available: {available_backbones()}")
    return _REGISTRY[key]


def build_backbone(
    name: str, spatial_dims: int, in_channels: int, num_classes: int, **options: Any
) -> nn.Module:
    """Build the backbone ``name`` (see :func:`available_backbones`).

    Args:
        name: registry name, case-insensitive.
        spatial_dims: 2 or 3.
        in_channels: image channels ``C_in``.
        num_classes: classes ``K``.
        **options: passed to the network's constructor (e.g. ``width`` for ``unet``,
            ``img_size``/``feature_size``/``hidden_size`` for ``unetr``,
            ``features`` for ``basicunet``, ``depth``/``filters``/``kernel_size``/
            ``strides`` for ``dynunet``), plus ``feature_modules=[...]`` to tap other
            modules (dotted names, coarsest first).

    Returns:
        a module with ``forward(image (B, C_in, *spatial)) -> (logits (B, K, *spatial),
        features)`` and ``feature_channels``/``feature_strides``/``spatial_dims``/
        ``in_channels``/``num_classes``.

    >>> net = build_backbone("basicunet", 2, 1, 3, features=(4, 4, 8, 8, 16, 4))
    >>> net.feature_channels, net.feature_strides
    ([16, 8, 8, 4, 4], [16, 8, 4, 2, 1])
    """
    spec = backbone_spec(name)
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    feature_modules = options.pop("feature_modules", None)
    if feature_modules is not None:
        feature_modules = list(feature_modules)
    return spec.build(spatial_dims, in_channels, num_classes, feature_modules, **options)


# ----------------------------------------------------------------------------- helpers
def _tap(
    net: nn.Module,
    name: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    modules: Sequence[str],
    *,
    size_multiple: int | Sequence[int] = 1,
    required_size: Sequence[int] | None = None,
    probe_size: Sequence[int] | None = None,
    logits_fn: Callable[[Any], torch.Tensor] | None = None,
) -> FeatureTap:
    """Wrap ``net`` with a FeatureTap whose channels/strides come from one probe forward."""
    if probe_size is None:
        # twice the divisor keeps >1 voxel at the bottleneck (instance norm needs it)
        probe_size = tuple(2 * m for m in per_axis(size_multiple, spatial_dims))
    probe = torch.zeros(1, in_channels, *probe_size)
    return FeatureTap(
        net,
        modules,
        probe_input=probe,
        spatial_dims=spatial_dims,
        size_multiple=size_multiple,
        required_size=required_size,
        logits_fn=logits_fn,
        in_channels=in_channels,
        num_classes=num_classes,
        name=name,
    )


# ----------------------------------------------------------------------------- builders
def _build_unet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    feature_modules: list[str] | None,
    **options: Any,
) -> nn.Module:
    net = UNet(spatial_dims, in_channels, num_classes, **options)
    if feature_modules is None:
        return net
    return _tap(
        net,
        "UNet",
        spatial_dims,
        in_channels,
        num_classes,
        feature_modules,
        size_multiple=UNet.size_multiple,
    )


def _build_basicunet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    feature_modules: list[str] | None,
    **options: Any,
) -> nn.Module:
    net = BasicUNet(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes, **options
    )
    modules = feature_modules or ["down_4", "upcat_4", "upcat_3", "upcat_2", "upcat_1"]
    return _tap(net, "BasicUNet", spatial_dims, in_channels, num_classes, modules, size_multiple=16)


def _build_unetr(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    feature_modules: list[str] | None,
    **options: Any,
) -> nn.Module:
    if "img_size" not in options:
        example = ", ".join(["96"] * spatial_dims)
        raise ValueError(
            f"UNETR needs the training patch size: pass img_size=({example}) "
            "(its ViT position embedding is built for one input size; each axis a multiple of 16)"
        )
    img_size = per_axis(options["img_size"], spatial_dims)
    if any(s % 16 for s in img_size):
        raise ValueError(f"UNETR img_size must be multiples of 16 (patch size), got {img_size}")
    options["img_size"] = img_size
    net = UNETR(
        in_channels=in_channels, out_channels=num_classes, spatial_dims=spatial_dims, **options
    )
    _freeze_unused_cross_attention(net)
    modules = feature_modules or ["decoder5", "decoder4", "decoder3", "decoder2"]
    return _tap(
        net,
        "UNETR",
        spatial_dims,
        in_channels,
        num_classes,
        modules,
        size_multiple=16,
        required_size=img_size,
        probe_size=img_size,
    )


def _freeze_unused_cross_attention(net: nn.Module) -> None:
    """MONAI's TransformerBlock always builds ``norm_cross_attn`` but only uses it with
    ``with_cross_attention=True``; freeze it otherwise, so no trainable parameter is left
    without a gradient (DDP would need ``find_unused_parameters=True``)."""
    for module in net.modules():
        norm = getattr(module, "norm_cross_attn", None)
        if isinstance(norm, nn.Module) and not getattr(module, "with_cross_attention", True):
            norm.requires_grad_(False)


def _build_swinunetr(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    feature_modules: list[str] | None,
    **options: Any,
) -> nn.Module:
    net = SwinUNETR(
        in_channels=in_channels, out_channels=num_classes, spatial_dims=spatial_dims, **options
    )
    modules = feature_modules or ["decoder5", "decoder4", "decoder3", "decoder2", "decoder1"]
    multiple = int(net.patch_size) ** 5
    # the stride-32 bottleneck is 1 voxel at the minimal size: fine for the eval-mode probe
    # unless instance norm (needs > 1 voxel), so probe at twice the minimum then
    norm = str(options.get("norm_name", "instance")).lower()
    probe = (multiple * (2 if "instance" in norm else 1),) * spatial_dims
    return _tap(
        net,
        "SwinUNETR",
        spatial_dims,
        in_channels,
        num_classes,
        modules,
        size_multiple=multiple,
        probe_size=probe,
    )


def dynunet_defaults(spatial_dims: int, depth: int = 4) -> dict[str, list[int]]:
    """nnU-Net-style isotropic DynUNet layout with ``depth`` 2x down-samplings.

    >>> dynunet_defaults(2, depth=3)
    {'kernel_size': [3, 3, 3, 3], 'strides': [1, 2, 2, 2], 'upsample_kernel_size': [2, 2, 2]}
    """
    if depth < 2:
        raise ValueError(f"DynUNet depth must be >= 2, got {depth}")
    strides = [1] + [2] * depth
    return {
        "kernel_size": [3] * (depth + 1),
        "strides": strides,
        "upsample_kernel_size": strides[1:],
    }


def _dynunet_logits(output: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """DynUNet with deep supervision stacks heads: ``(B, 1 + n, K, *S)`` -> ``(B, K, *S)``."""
    return output[:, 0] if output.ndim == spatial_dims + 3 else output


def _build_dynunet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    feature_modules: list[str] | None,
    **options: Any,
) -> nn.Module:
    given = options.get("strides", options.get("kernel_size"))
    depth = int(options.pop("depth", len(given) - 1 if given is not None else 4))
    defaults = dynunet_defaults(spatial_dims, depth)
    options.setdefault("kernel_size", defaults["kernel_size"])
    options.setdefault("strides", defaults["strides"])
    options.setdefault("upsample_kernel_size", list(options["strides"])[1:])
    net = DynUNet(spatial_dims, in_channels, num_classes, **options)
    strides = [per_axis(s, spatial_dims) for s in net.strides]
    if strides[0] != (1,) * spatial_dims:
        raise ValueError(
            f"DynUNet strides[0] must be 1 for full-resolution logits, got {net.strides[0]}"
        )
    multiple = tuple(math.prod(s[a] for s in strides) for a in range(spatial_dims))
    n_up = len(net.upsamples)
    modules = feature_modules or ["bottleneck"] + [f"upsamples.{i}" for i in range(n_up)]
    return _tap(
        net,
        "DynUNet",
        spatial_dims,
        in_channels,
        num_classes,
        modules,
        size_multiple=multiple,
        logits_fn=functools.partial(_dynunet_logits, spatial_dims=spatial_dims),
    )


# ----------------------------------------------------------------------------- registry
register_backbone(
    "unet",
    BackboneSpec(
        _build_unet,
        small_options={2: {"width": 0.25}, 3: {"width": 0.25}},
        description="MORSE/SSL4MIS UNet (ours), 5 decoder scales",
    ),
)
register_backbone(
    "basicunet",
    BackboneSpec(
        _build_basicunet,
        small_options={d: {"features": (4, 4, 8, 8, 16, 4)} for d in (2, 3)},
        description="MONAI BasicUNet, taps down_4 + upcat_4..upcat_1",
    ),
)
register_backbone(
    "unetr",
    BackboneSpec(
        _build_unetr,
        small_options={
            d: {"img_size": 32, "feature_size": 4, "hidden_size": 24, "mlp_dim": 48, "num_heads": 2}
            for d in (2, 3)
        },
        description="MONAI UNETR, taps decoder5..decoder2 (needs img_size)",
    ),
)
register_backbone(
    "swinunetr",
    BackboneSpec(
        _build_swinunetr,
        small_options={
            d: {
                "feature_size": 12,
                "depths": (1, 1, 1, 1),
                "num_heads": (1, 1, 1, 1),
                "window_size": 4,
                "norm_name": "batch",
            }
            for d in (2, 3)
        },
        description="MONAI SwinUNETR, taps decoder5..decoder1",
    ),
)
register_backbone(
    "dynunet",
    BackboneSpec(
        _build_dynunet,
        small_options={d: {"filters": (4, 8, 8, 16, 16)} for d in (2, 3)},
        description="MONAI DynUNet (nnU-Net), taps bottleneck + upsamples",
    ),
)
register_backbone(
    "transunet",
    BackboneSpec(
        build_transunet,
        small_options={2: TRANSUNET_SMALL},
        description="TransUNet (R50+ViT-B/16 hybrid, CUP decoder), 2D only, needs img_size",
    ),
)
