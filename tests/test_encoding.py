"""Fourier encoding of point coordinates."""

import torch

from morse.renderer.encoding import FourierEncoding
from morse.renderer.points import cell_centres


def test_encoding_under_bf16_autocast_equals_fp32_at_512_grid_centres():
    encoding = FourierEncoding(2, num_frequencies=16, scale=10.0)
    coords = cell_centres(torch.arange(512 * 2)[None], (512, 2))
    reference = encoding(coords)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        encoded = encoding(coords)
    assert encoded.dtype == torch.float32 and encoded.shape == (1, 1024, 32)
    assert torch.equal(encoded, reference)


def test_matrix_is_a_saved_buffer_drawn_from_the_seed():
    first, second = FourierEncoding(3, 4, seed=1), FourierEncoding(3, 4, seed=1)
    assert "matrix" in first.state_dict() and first.matrix.shape == (3, 4)
    assert torch.equal(first.matrix, second.matrix)
    assert not torch.equal(first.matrix, FourierEncoding(3, 4, seed=2).matrix)
