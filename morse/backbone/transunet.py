"""TransUNet (Chen et al. 2021): an R50+ViT-B/16 hybrid encoder and the "CUP" decoder, 2D.

Shapes: ``B`` batch, ``K`` classes, image ``(B, C_in, H, W)`` with ``(H, W) = img_size``,
``h, w = H/16, W/16`` the token grid, ``D`` the ViT width (768 in ViT-B/16)::

    ResNetV2 (R50)      -> (B, 1024, h, w) and skips (B, 512, H/8) (B, 256, H/4) (B, 64, H/2)
    patch embedding     conv 1x1 (patch size 1 on the stride-16 map) -> h*w tokens of width D
    + learned position embeddings (built for img_size), 12 pre-norm transformer blocks, LayerNorm
    CUP decoder         conv3x3-BN-ReLU D -> 512 on the token grid           feature 0, stride 16
                        4 x (2x bilinear up, concat skip, 2 x conv3x3-BN-ReLU):
                        256 @ H/8, 128 @ H/4, 64 @ H/2 (with skips), 16 @ H    features 1..4
    head                conv3x3 16 -> K                                        logits (B, K, H, W)

MORSE's features are the decoder's five maps, coarsest first (strides 16, 8, 4, 2, 1).

Why not timm's hybrid ViT: timm imports torchvision when it is imported, and PyPI has no CPU
build of torchvision matching the torch this project pins, so the encoder is written here from
torch and MONAI blocks (MONAI's ``TransformerBlock`` with separate q/k/v projections, which
map one to one onto Google's ``.npz``). Pretrained weights come from a local file
(:func:`morse.backbone.pretrained.load_pretrained`). Knowing departures from TransUNet:
dropout 0.1 only after the position embeddings (MONAI's block ties MLP dropout to attention
dropout, which TransUNet does not use), LayerNorm eps 1e-5 in the blocks, the padded max-pool
of :mod:`morse.backbone.resnetv2`, and position embeddings drawn from N(0, 0.02) rather than
zeros when no weights are loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import TransformerBlock

from morse.backbone.checks import check_image
from morse.backbone.hooks import FeatureTap
from morse.backbone.pretrained import load_pretrained
from morse.backbone.resnetv2 import ResNetV2

__all__ = ["TransUNet", "build_transunet", "TRANSUNET_SMALL"]

TRANSUNET_SMALL: dict[str, Any] = {
    "img_size": 32, "vit_layers": 2, "hidden_size": 64, "num_heads": 2, "mlp_dim": 128,
    "resnet_units": (1, 1, 1), "resnet_width": 8, "head_channels": 32,
    "decoder_channels": (32, 16, 8, 8),
}
"""A tiny TransUNet for CPU tests (32x32 images, 2x2 tokens)."""


class GrayToRGB(nn.Module):
    """Repeat a grayscale image to 3 channels, as TransUNet does for RGB-pretrained weights.

    A fixed 1x1 convolution of ones (buffer ``weight`` (3, 1, 1, 1)) rather than ``repeat``:
    a checkpoint then shows the image's channel count on its first convolution weight, which
    is where :mod:`morse.inference.trained` reads it. ``(B, 1, H, W) -> (B, 3, H, W)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(3, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight)


class ViTEncoder(nn.Module):
    """Patch embedding (size 1), position embeddings and pre-norm transformer blocks.

    ``(B, c_in, h, w) -> (B, D, h, w)``; ``grid = (h, w)`` is fixed by the position embeddings.
    """

    def __init__(
        self, c_in: int, grid: tuple[int, int], hidden_size: int, layers: int, num_heads: int,
        mlp_dim: int, dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.grid = grid
        self.patch_embed = nn.Conv2d(c_in, hidden_size, 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], hidden_size))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, mlp_dim, num_heads, qkv_bias=True,
                             use_combined_linear=False, use_flash_attention=True)
            for _ in range(layers)
        )
        for block in self.blocks:  # built by MONAI, used only with cross-attention
            block.norm_cross_attn.requires_grad_(False)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.dropout(self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens).transpose(1, 2).reshape(x.shape[0], -1, *self.grid)


class ConvBNReLU(nn.Sequential):
    """conv3x3 (no bias) - BatchNorm - ReLU; ``(B, c_in, H, W) -> (B, c_out, H, W)``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU())


class DecoderBlock(nn.Module):
    """2x bilinear upsampling (align corners), concat the skip, two ConvBNReLU.

    ``x (B, c_in, H/2, W/2)``, ``skip (B, c_skip, H, W)`` or None -> ``(B, c_out, H, W)``.
    """

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(ConvBNReLU(c_in + c_skip, c_out), ConvBNReLU(c_out, c_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.convs(x if skip is None else torch.cat([x, skip], dim=1))


class CupDecoder(nn.Module):
    """TransUNet's cascaded upsampler: tokens and three skips -> five maps, coarsest first."""

    def __init__(
        self, hidden_size: int, head_channels: int, channels: Sequence[int],
        skip_channels: Sequence[int],
    ) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"decoder_channels must be four widths, got {tuple(channels)}")
        self.conv_more = ConvBNReLU(hidden_size, head_channels)
        inputs = [head_channels, *channels[:-1]]
        skips = [*skip_channels, 0]  # the last block (stride 1) has no skip
        self.blocks = nn.ModuleList(
            DecoderBlock(i, s, o) for i, s, o in zip(inputs, skips, channels)
        )

    def forward(self, tokens: torch.Tensor, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``tokens (B, D, h, w)``, skips at strides 8, 4, 2 -> maps at strides 16, 8, 4, 2, 1."""
        features = [self.conv_more(tokens)]
        for block, skip in zip(self.blocks, [*skips, None]):
            features.append(block(features[-1], skip))
        return features


class TransUNet(nn.Module):
    """TransUNet (R50+ViT-B/16 hybrid + CUP) returning ``(logits, features)``.

    Args:
        spatial_dims: must be 2.
        in_channels: image channels ``C_in``; 1 is repeated to 3 (RGB-pretrained weights).
        num_classes: ``K``.
        img_size: the training size (int or (H, W), multiples of 16); the position
            embeddings fix it, so every input must have exactly this size.
        vit_layers, hidden_size, num_heads, mlp_dim: the ViT (12, 768, 12, 3072 = ViT-B/16).
        resnet_units, resnet_width: the ResNetV2 ((3, 4, 9), 64 = R50).
        head_channels: width of the decoder's first conv on the token grid (512).
        decoder_channels: the four upsampling blocks' widths ((256, 128, 64, 16)).
        pretrained: a local ``.npz`` (Google's R50+ViT-B_16) or ``.pt``/``.pth`` state dict
            to load the encoder from; None: random initialisation.

    >>> net = TransUNet(2, 1, 9, **TRANSUNET_SMALL)
    >>> net.feature_channels, net.feature_strides
    ([32, 32, 16, 8, 8], [16, 8, 4, 2, 1])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        img_size: int | Sequence[int] = 224,
        vit_layers: int = 12,
        hidden_size: int = 768,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        resnet_units: Sequence[int] = (3, 4, 9),
        resnet_width: int = 64,
        head_channels: int = 512,
        decoder_channels: Sequence[int] = (256, 128, 64, 16),
        pretrained: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.img_size = _image_size(spatial_dims, img_size)
        self.spatial_dims, self.in_channels, self.num_classes = 2, in_channels, num_classes
        self.to_rgb = GrayToRGB() if in_channels == 1 else None
        self.resnet = ResNetV2(3 if in_channels == 1 else in_channels, resnet_width, resnet_units)
        grid = (self.img_size[0] // 16, self.img_size[1] // 16)
        self.vit = ViTEncoder(self.resnet.out_channels, grid, hidden_size, vit_layers, num_heads,
                              mlp_dim)
        self.decoder = CupDecoder(hidden_size, head_channels, decoder_channels,
                                  self.resnet.skip_channels)
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)
        self.feature_channels = [head_channels, *(int(c) for c in decoder_channels)]
        self.feature_strides = [16, 8, 4, 2, 1]
        if pretrained is not None:
            load_pretrained(self, pretrained)

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, C_in, H, W)`` -> tokens ``(B, D, H/16, W/16)`` and skips at strides 8, 4, 2."""
        check_image(image, spatial_dims=2, in_channels=self.in_channels,
                    required_size=self.img_size, name="TransUNet")
        x = self.to_rgb(image) if self.to_rgb is not None else image
        x, skips = self.resnet(x)
        return self.vit(x), skips

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, C_in, H, W)`` -> logits ``(B, K, H, W)`` and five features, coarsest first."""
        tokens, skips = self.encode(image)
        features = self.decoder(tokens, skips)
        return self.head(features[-1]), features


def _image_size(spatial_dims: int, img_size: int | Sequence[int]) -> tuple[int, int]:
    if spatial_dims != 2:
        raise ValueError(
            f"TransUNet is 2D only (spatial_dims=2), got spatial_dims={spatial_dims}; "
            "for 3D use unetr or swinunetr"
        )
    size = (int(img_size),) * 2 if isinstance(img_size, int) else tuple(int(s) for s in img_size)
    if len(size) != 2 or any(s < 16 or s % 16 for s in size):
        raise ValueError(
            f"TransUNet img_size must be one or two multiples of 16 (the token stride), got "
            f"{img_size}; TransUNet's setting is 224"
        )
    return size  # type: ignore[return-value]


def build_transunet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    feature_modules: list[str] | None,
    **options: Any,
) -> nn.Module:
    """Registry builder: :class:`TransUNet`, or a FeatureTap on it for ``feature_modules``."""
    net = TransUNet(spatial_dims, in_channels, num_classes, **options)
    if feature_modules is None:
        return net
    return FeatureTap(
        net, feature_modules, probe_input=torch.zeros(1, in_channels, *net.img_size),
        spatial_dims=2, required_size=net.img_size, in_channels=in_channels,
        num_classes=num_classes, name="TransUNet",
    )
