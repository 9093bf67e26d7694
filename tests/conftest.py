"""Fixtures shared by the test modules: tiny datasets on disk, built from ``helpers``."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import make_dataset, make_synapse


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Five 32 x 32 x 6 nnU-Net cases (discs on noise) in a fresh folder."""
    return make_dataset(tmp_path / "Dataset001_Disc")


@pytest.fixture
def synapse_root(tmp_path: Path) -> Path:
    """TransUNet's Synapse layout with three training slices and one test volume."""
    return make_synapse(tmp_path / "Synapse")
