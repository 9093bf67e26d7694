"""The MORSE paper's UNet (2D, and the same class in 3D).

This is the SSL4MIS UNet used by the MORSE authors::

    ConvBlock = conv3x3 - BN - LeakyReLU - Dropout - conv3x3 - BN - LeakyReLU
    encoder   = in_conv (ConvBlock) + 4 x Down (maxpool 2 + ConvBlock)
    decoder   = 4 x Up (1x1 conv to reduce channels + 2x bilinear/trilinear upsample,
                        or a 2x transposed conv; concat skip; ConvBlock)
    out_conv  = conv3x3 -> K classes

Channels default to ``(16, 32, 64, 128, 256)``, encoder dropout to
``(0.05, 0.1, 0.2, 0.3, 0.5)`` and no dropout in the decoder, as in SSL4MIS.  The
MORSE features are five decoder scales, coarsest first: the bottleneck (256 channels,
stride 16) and the outputs of the four Up blocks (128/64/32/16 channels, strides
8/4/2/1).  2D and 3D share one code path through MONAI's layer factories.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool

from morse.backbone.checks import check_image

__all__ = ["ConvBlock", "Down", "Up", "UNet", "scale_channels"]


def scale_channels(channels: Sequence[int], width: float) -> tuple[int, ...]:
    """Multiply channel counts by ``width``, rounding, with a floor of 4.

    >>> scale_channels((16, 32, 64, 128, 256), 0.25)
    (4, 8, 16, 32, 64)
    >>> scale_channels((16, 32), 0.1)
    (4, 4)
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return tuple(max(4, int(round(c * width))) for c in channels)


class ConvBlock(nn.Sequential):
    """conv3x3-BN-LeakyReLU-Dropout-conv3x3-BN-LeakyReLU; ``(B, c_in, *S) -> (B, c_out, *S)``."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, dropout: float = 0.0) -> None:
        conv = Conv[Conv.CONV, spatial_dims]
        norm = Norm[Norm.BATCH, spatial_dims]
        super().__init__(
            conv(in_ch, out_ch, kernel_size=3, padding=1),
            norm(out_ch),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            conv(out_ch, out_ch, kernel_size=3, padding=1),
            norm(out_ch),
            nn.LeakyReLU(),
        )


class Down(nn.Sequential):
    """maxpool 2 + ConvBlock; ``(B, c_in, *S) -> (B, c_out, *S/2)``."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, dropout: float = 0.0) -> None:
        super().__init__(
            Pool[Pool.MAX, spatial_dims](kernel_size=2),
            ConvBlock(spatial_dims, in_ch, out_ch, dropout),
        )


class Up(nn.Module):
    """Upsample ``x`` 2x, concatenate the skip, ConvBlock.

    ``upsample="interp"``: 1x1 conv ``c_low -> c_skip`` then bilinear/trilinear (align
    corners, as SSL4MIS); ``"deconv"``: transposed conv ``c_low -> c_skip``, kernel 2.

    Shapes: ``x (B, c_low, *S/2)``, ``skip (B, c_skip, *S)`` -> ``(B, c_out, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        low_ch: int,
        skip_ch: int,
        out_ch: int,
        dropout: float = 0.0,
        upsample: str = "interp",
    ) -> None:
        super().__init__()
        if upsample not in ("interp", "deconv"):
            raise ValueError(f"upsample must be 'interp' or 'deconv', got {upsample!r}")
        self.upsample = upsample
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        if upsample == "interp":
            self.reduce = Conv[Conv.CONV, spatial_dims](low_ch, skip_ch, kernel_size=1)
        else:
            self.reduce = Conv[Conv.CONVTRANS, spatial_dims](low_ch, skip_ch, 2, stride=2)
        self.conv = ConvBlock(spatial_dims, 2 * skip_ch, out_ch, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        if self.upsample == "interp":
            x = F.interpolate(x, size=skip.shape[2:], mode=self.mode, align_corners=True)
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """The MORSE/SSL4MIS UNet; returns ``(logits, features)``.

    Args:
        spatial_dims: 2 or 3 (the 3D UNet is the same class).
        in_channels: input channels ``C_in``.
        num_classes: output classes ``K``.
        channels: the five encoder widths at full ``width``.
        width: multiplies every width (rounded, at least 4) for small machines.
        dropout: dropout of the five encoder ConvBlocks (a float repeats); the decoder
            has none, as in SSL4MIS.
        upsample: ``"interp"`` (1x1 conv + bilinear/trilinear) or ``"deconv"``.

    ``forward(image (B, C_in, *spatial))`` with every spatial size a multiple of 16 returns
    ``logits (B, K, *spatial)`` and five features, coarsest first:
    ``(B, c_s, *spatial / stride_s)`` with ``feature_channels = channels[::-1]`` and
    ``feature_strides = [16, 8, 4, 2, 1]``.

    Example:
        >>> net = UNet(2, in_channels=1, num_classes=3, width=0.25)
        >>> net.feature_channels, net.feature_strides
        ([64, 32, 16, 8, 4], [16, 8, 4, 2, 1])
        >>> logits, feats = net(torch.randn(2, 1, 32, 48))
        >>> tuple(logits.shape), tuple(feats[0].shape), tuple(feats[-1].shape)
        ((2, 3, 32, 48), (2, 64, 2, 3), (2, 4, 32, 48))
    """

    size_multiple: int = 16

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        width: float = 1.0,
        dropout: float | Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
        upsample: str = "interp",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(channels) != 5:
            raise ValueError(f"channels needs 5 entries (encoder levels), got {tuple(channels)}")
        drops = (float(dropout),) * 5 if isinstance(dropout, (int, float)) else tuple(dropout)
        if len(drops) != 5:
            raise ValueError(f"dropout needs 5 entries (encoder levels), got {drops}")
        ch = scale_channels(channels, width)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels = ch

        self.in_conv = ConvBlock(spatial_dims, in_channels, ch[0], drops[0])
        self.downs = nn.ModuleList(
            Down(spatial_dims, ch[i], ch[i + 1], drops[i + 1]) for i in range(4)
        )
        self.ups = nn.ModuleList(
            Up(spatial_dims, ch[4 - i], ch[3 - i], ch[3 - i], 0.0, upsample) for i in range(4)
        )
        self.out_conv = Conv[Conv.CONV, spatial_dims](ch[0], num_classes, kernel_size=3, padding=1)

        self.feature_channels: list[int] = list(ch[::-1])
        self.feature_strides: list[int] = [16, 8, 4, 2, 1]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``image (B, C_in, *spatial)`` -> ``(logits (B, K, *spatial), 5 features)``."""
        check_image(
            image,
            spatial_dims=self.spatial_dims,
            in_channels=self.in_channels,
            size_multiple=self.size_multiple,
            name="UNet",
        )
        skips = [self.in_conv(image)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        features = [x]
        for up in self.ups:
            x = up(x, skips.pop())
            features.append(x)
        return self.out_conv(x), features
