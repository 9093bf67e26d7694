"""Case-level train/val/test splits, deterministic for a seed, saved as JSON.

Example:
    >>> s = split_cases([f"c{i}" for i in range(10)], (0.7, 0.1, 0.2), seed=0)
    >>> len(s.train), len(s.val), len(s.test)
    (7, 1, 2)
    >>> s == split_cases([f"c{i}" for i in reversed(range(10))], (0.7, 0.1, 0.2), seed=0)
    True
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from morse.errors import DataError
from morse.io import atomic_write_text

from .validate import read_json

__all__ = [
    "Split", "split_cases", "save_split", "load_split", "subset_counts", "describe_split",
    "split_warnings", "announce_split",
]

SUBSETS = ("train", "val", "test")


@dataclass
class Split:
    """Case ids of each subset (each list sorted)."""

    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        """``{"train": [...], "val": [...], "test": [...]}``."""
        return asdict(self)

    def all_cases(self) -> list[str]:
        """Every case of the three subsets."""
        return [*self.train, *self.val, *self.test]


def subset_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """How many of ``n`` items each fraction gets; nonzero fractions get at least one when
    ``n`` allows, the largest-fraction subset takes the rounding remainder.

    >>> subset_counts(10, (0.7, 0.1, 0.2)), subset_counts(3, (0.7, 0.1, 0.2))
    ([7, 1, 2], [1, 1, 1])
    >>> subset_counts(2, (0.7, 0.1, 0.2)), subset_counts(5, (1.0, 0.0, 0.0))
    ([1, 0, 1], [5, 0, 0])
    """
    fractions = [float(f) for f in fractions]
    if any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0, atol=1e-6):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    nonzero = [i for i, f in enumerate(fractions) if f > 0]
    by_size = sorted(nonzero, key=lambda i: (-fractions[i], i))
    counts = [0] * len(fractions)
    if n < len(nonzero):  # too few cases: the largest fractions get one each
        for i in by_size[:n]:
            counts[i] = 1
        return counts
    for i in nonzero:
        counts[i] = max(1, int(np.floor(n * fractions[i] + 0.5)))
    while sum(counts) < n:
        counts[by_size[0]] += 1
    while sum(counts) > n:  # take from the fullest subset, which has more than one
        counts[max(nonzero, key=lambda i: (counts[i], fractions[i], i))] -= 1
    return counts


def split_cases(
    case_ids: Iterable[str],
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 1337,
    group_of: Callable[[str], str] | None = None,
) -> Split:
    """Split cases into train/val/test, deterministically for ``seed`` whatever the input order.

    Args:
        case_ids: unique case identifiers.
        fractions: (train, val, test) fractions summing to 1.
        seed: shuffling seed.
        group_of: optional map case -> group (e.g. patient); groups are never divided and the
            fractions then count groups.

    Returns:
        A :class:`Split` with sorted lists.
    """
    case_ids = [str(c) for c in case_ids]
    duplicates = sorted({c for c in case_ids if case_ids.count(c) > 1})
    if duplicates:
        raise DataError(f"case ids {duplicates} are listed twice; make case ids unique")
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, val, test), got {fractions}")
    group_of = group_of or (lambda c: c)
    groups = sorted({group_of(c) for c in case_ids})
    order = np.random.default_rng(seed).permutation(len(groups))
    shuffled = [groups[i] for i in order]
    counts = subset_counts(len(groups), fractions)
    bounds = np.cumsum([0, *counts])
    members = {name: set(shuffled[bounds[i] : bounds[i + 1]]) for i, name in enumerate(SUBSETS)}
    return Split(
        **{name: sorted(c for c in case_ids if group_of(c) in members[name]) for name in SUBSETS}
    )


def save_split(path: str | Path, split: Split) -> Path:
    """Write ``{"train": [...], "val": [...], "test": [...]}`` to ``path``; return the path."""
    return atomic_write_text(path, json.dumps(split.as_dict(), indent=2) + "\n")


def load_split(path: str | Path, known_cases: Iterable[str] | None = None) -> Split:
    """Read a split JSON file.

    Args:
        path: JSON file written by :func:`save_split` (or by hand).
        known_cases: when given, every listed case must be one of them.

    Raises:
        DataError: missing file, bad JSON or keys, a case in two subsets, or an unknown case.
    """
    path = Path(path)
    data = read_json(path, "split file not found; create it with save_split")
    if not isinstance(data, dict) or any(not isinstance(data.get(k, []), list) for k in SUBSETS):
        raise DataError(f'{path}: expected {{"train": [...], "val": [...], "test": [...]}}')
    extra = sorted(set(data) - set(SUBSETS))
    if extra:
        raise DataError(f"{path}: unknown key(s) {extra}; use only train, val and test")
    split = Split(**{k: [str(c) for c in data.get(k, [])] for k in SUBSETS})
    cases = split.all_cases()
    repeated = sorted({c for c in cases if cases.count(c) > 1})
    if repeated:
        raise DataError(
            f"{path}: case(s) {repeated} appear more than once; each case belongs to one subset"
        )
    if known_cases is not None:
        unknown = sorted(set(cases) - {str(c) for c in known_cases})
        if unknown:
            raise DataError(
                f"{path}: case(s) {unknown} are not in the dataset; remove them from the split "
                "or check the dataset folder"
            )
    return split


def check_same_split(current: Split, saved_path: str | Path) -> None:
    """Refuse a split that differs from the one a run saved (``split.json``): with a case added
    to or removed from the dataset, the seeded split can move cases between subsets, and a
    training case scored as "test" would inflate the result without a word.

    Raises:
        DataError: naming the first cases that moved, and the fix.
    """
    saved_path = Path(saved_path)
    if not saved_path.is_file():
        return
    saved = load_split(saved_path)
    before = {case: name for name in SUBSETS for case in getattr(saved, name)}
    now = {case: name for name in SUBSETS for case in getattr(current, name)}
    moved = [f"{case}: {before.get(case, 'new')} -> {now.get(case, 'gone')}"
             for case in sorted(set(before) | set(now)) if before.get(case) != now.get(case)]
    if moved:
        shown = "; ".join(moved[:5]) + (f"; and {len(moved) - 5} more" if len(moved) > 5 else "")
        raise DataError(
            f"{saved_path}: the dataset's cases changed since this run was trained, and its "
            f"split would change ({shown}); restore the case list, or set data.split_file to "
            "this file to keep the run's subsets"
        )


_TITLES = {"train": "training", "val": "validation", "test": "test"}
_CONSEQUENCE = {
    "train": "the model learns from too little",
    "val": "best.pt is chosen on too few cases (none: evaluate last.pt)",
    "test": "the test score rests on too few cases",
}


def describe_split(split: Split, shown: int = 6) -> list[str]:
    """One line per subset: its size and its case ids (at most ``shown``, then a count).

    >>> describe_split(Split([f"c{i}" for i in range(9)], ["v"], []), shown=3)
    ['training   9 cases: c0, c1, c2 ... and 6 more', 'validation 1 case: v', 'test       0 cases']
    """
    lines = []
    for name, cases in split.as_dict().items():
        head = f"{_TITLES[name]:<10} {len(cases)} case{'' if len(cases) == 1 else 's'}"
        listed = ", ".join(cases[:shown]) + (f" ... and {len(cases) - shown} more"
                                            if len(cases) > shown else "")
        lines.append(f"{head}: {listed}" if cases else head)
    return lines


def split_warnings(split: Split, tiny: int = 2) -> list[str]:
    """A warning for each subset that is empty or holds fewer than ``tiny`` cases.

    >>> split_warnings(Split(["a"], [], ["b", "c"]))[0]
    'the training subset holds 1 case: the model learns from too little'
    """
    warnings = []
    for name, cases in split.as_dict().items():
        if len(cases) < tiny:
            size = "is empty" if not cases else f"holds {len(cases)} case"
            warnings.append(f"the {_TITLES[name]} subset {size}: {_CONSEQUENCE[name]}")
    return warnings


def announce_split(split: Split, run_dir: str | Path) -> Path:
    """Print the split (stdout), warn about tiny subsets (stderr), save ``run_dir/split.json``."""
    print("data split (saved in split.json):")
    for line in describe_split(split):
        print(f"  {line}")
    for warning in split_warnings(split):
        print(f"warning: {warning}; add cases or change data.split_fractions / data.split_file",
              file=sys.stderr)
    return save_split(Path(run_dir) / "split.json", split)
