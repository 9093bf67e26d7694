"""Case-level splits: deterministic, disjoint, complete, saved and loaded as JSON."""

from __future__ import annotations

import json

import pytest

from morse.data import Split, split_cases
from morse.data.acdc import acdc_patient_of
from morse.data.split import load_split, save_split, subset_counts
from morse.errors import DataError

CASES = [f"case_{i:03d}" for i in range(20)]


def test_split_is_deterministic_whatever_the_order():
    a = split_cases(CASES, seed=3)
    b = split_cases(list(reversed(CASES)), seed=3)
    assert a == b
    assert split_cases(CASES, seed=4) != a


def test_split_is_disjoint_complete_and_sized():
    split = split_cases(CASES, (0.7, 0.1, 0.2), seed=1)
    assert (len(split.train), len(split.val), len(split.test)) == (14, 2, 4)
    assert sorted(split.all_cases()) == sorted(CASES)
    assert len(set(split.all_cases())) == len(CASES)
    assert split.train == sorted(split.train)


@pytest.mark.parametrize(
    ("n", "fractions", "expected"),
    [
        (3, (0.7, 0.1, 0.2), [1, 1, 1]),
        (4, (0.8, 0.1, 0.1), [2, 1, 1]),
        (2, (0.7, 0.1, 0.2), [1, 0, 1]),
        (1, (0.7, 0.1, 0.2), [1, 0, 0]),
        (7, (0.5, 0.0, 0.5), [4, 0, 3]),
        (0, (0.7, 0.1, 0.2), [0, 0, 0]),
    ],
)
def test_subset_counts_give_each_nonzero_subset_a_case(n, fractions, expected):
    assert subset_counts(n, fractions) == expected


def test_bad_fractions_and_duplicates():
    with pytest.raises(ValueError, match="sum to 1"):
        split_cases(CASES, (0.5, 0.1, 0.1))
    with pytest.raises(DataError, match=r"case ids \['x'\] are listed twice"):
        split_cases(["x", "y", "x"])


def test_groups_stay_together():
    cases = [f"patient{p:03d}_frame{f:02d}" for p in range(1, 11) for f in (1, 12)]
    split = split_cases(cases, seed=0, group_of=acdc_patient_of)
    subsets = [split.train, split.val, split.test]
    for patient in {acdc_patient_of(c) for c in cases}:
        holding = [
            i for i, s in enumerate(subsets) if any(acdc_patient_of(c) == patient for c in s)
        ]
        assert len(holding) == 1, patient
    assert (len(split.train), len(split.val), len(split.test)) == (14, 2, 4)


def test_save_and_load_round_trip(tmp_path):
    split = split_cases(CASES, seed=2)
    path = save_split(tmp_path / "sub" / "split.json", split)
    assert set(json.loads(path.read_text())) == {"train", "val", "test"}
    assert load_split(path, known_cases=CASES) == split


def test_load_split_names_unknown_and_repeated_cases(tmp_path):
    path = save_split(tmp_path / "s.json", Split(train=["a", "ghost"], val=["b"], test=[]))
    with pytest.raises(DataError, match=r"s.json: case\(s\) \['ghost'\] are not in the dataset"):
        load_split(path, known_cases=["a", "b"])
    path.write_text(json.dumps({"train": ["a"], "val": ["a"], "test": []}))
    with pytest.raises(DataError, match=r"\['a'\] appear more than once"):
        load_split(path)
    path.write_text(json.dumps({"train": [], "validation": []}))
    with pytest.raises(DataError, match="unknown key"):
        load_split(path)
    with pytest.raises(DataError, match="split file not found"):
        load_split(tmp_path / "none.json")
