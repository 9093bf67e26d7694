"""evaluate's distance unit: mm from volumes that know their spacing, voxels from those that
do not, and a refusal to mix them."""

from __future__ import annotations

import numpy as np
import pytest

from morse.data.volume import Volume
from morse.errors import DataError
from morse.evaluation.evaluate import distance_unit, metric_spacing


def _volume(case_id: str, spacing_known: bool) -> Volume:
    affine = np.diag([0.5, 1.0, 2.5, 1.0]) if spacing_known else np.eye(4)
    return Volume(np.zeros((1, 4, 4, 3)), np.zeros((4, 4, 3)), affine, case_id=case_id,
                  spacing_known=spacing_known)


def test_volumes_with_spacing_measure_in_mm():
    volumes = [_volume("a", True), _volume("b", True)]
    assert distance_unit(volumes) == "mm"
    assert metric_spacing(volumes[0]) == (0.5, 1.0, 2.5)


def test_volumes_without_spacing_measure_in_voxels():
    volume = _volume("a", False)
    volume.affine = np.diag([3.0, 3.0, 3.0, 1.0])  # an affine that is not to be believed
    assert distance_unit([volume]) == "voxels"
    assert metric_spacing(volume) == (1.0, 1.0, 1.0)


def test_mixed_units_are_refused_with_the_cases_named():
    with pytest.raises(DataError, match=r"\['a'\] have a voxel size.*\['b'\] have none"):
        distance_unit([_volume("a", True), _volume("b", False)])
