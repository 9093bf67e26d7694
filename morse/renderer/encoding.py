"""Fourier encoding of point coordinates: what makes the point head an implicit function."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FourierEncoding"]


class FourierEncoding(nn.Module):
    """``gamma(x) = [sin(2 pi (2x - 1) W), cos(2 pi (2x - 1) W)]`` with a fixed random ``W``.

    ``W`` (D, F) is drawn once from N(0, scale^2) and kept as a buffer, so it is saved in the
    state dict and a reloaded model encodes coordinates exactly as the trained one did.

    Args:
        spatial_dims: D.
        num_frequencies: F; the encoding has ``2 F`` channels (paper: 128 -> 256).
        scale: standard deviation of ``W``; larger values resolve finer detail.
        seed: seed for drawing ``W`` (independent of the global random state).

    >>> enc = FourierEncoding(2, num_frequencies=4)
    >>> enc(torch.rand(3, 10, 2)).shape
    torch.Size([3, 10, 8])
    """

    def __init__(
        self, spatial_dims: int, num_frequencies: int = 128, scale: float = 1.0, seed: int = 0
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        matrix = torch.randn(spatial_dims, num_frequencies, generator=generator) * scale
        self.register_buffer("matrix", matrix)

    @property
    def out_channels(self) -> int:
        return 2 * self.matrix.shape[1]

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode coordinates.

        Args:
            coords: (B, P, D) in [0, 1].

        Returns:
            (B, P, 2F) point-major (the renderer's rows); fp32 (or wider) even under
            autocast.
        """
        # Autocast would run the matmul in bf16 and move the phase of a 512-grid cell centre by
        # up to half a cell: the phase is computed in fp32, whatever the autocast setting.
        dtype = torch.promote_types(torch.promote_types(coords.dtype, self.matrix.dtype),
                                    torch.float32)
        with torch.autocast(coords.device.type, enabled=False):
            projected = 2 * math.pi * (2 * coords.to(dtype) - 1) @ self.matrix.to(dtype)
        return torch.cat([projected.sin(), projected.cos()], dim=-1)
