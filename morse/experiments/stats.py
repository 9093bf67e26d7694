"""Statistics of a comparison: mean and spread over seeds, and a bootstrap interval that
resamples the independent units of the design.

A comparison trains each variant with S seeds and scores every run on the same C cases, so
its paired differences form an S x C table (one value per seed and case, the classes averaged
inside the case). Neither the classes of a case nor the cases of a seed are independent of
each other: resampling (seed, class) pairs as if they were treats 3 seeds x 10 classes as 30
independent draws and gives intervals narrower than the design supports. Here each bootstrap
resample draws S seeds and C cases with replacement and averages the table over the drawn
rows and columns. The same case draw serves every seed, because every seed scored the same
cases: a case on which one variant does well does so under every seed, and drawing cases
afresh per seed would average that away (a two-way cluster bootstrap, crossed, not nested).

Pure functions of plain numbers (numpy only), so a reviewer can check them by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "MIN_UNITS",
    "Interval",
    "cluster_bootstrap",
    "distinct_resamples",
    "mean_std",
    "small_sample_warning",
]

#: Resamples of the bootstrap and the seed of its generator (results are reproducible).
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

#: Fewer independent units than this at a level (seeds, or cases) and the interval says
#: little about that level's variation: it is flagged as not informative.
MIN_UNITS = 5


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1); the spread is None for a single value.

    >>> [round(v, 6) for v in mean_std([0.7, 0.8, 0.9])]
    [0.8, 0.1]
    >>> mean_std([0.5])
    (0.5, None)
    """
    if not len(values):
        raise ValueError("mean_std needs at least one value")
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if array.size > 1 else None
    return float(array.mean()), std


def distinct_resamples(n: int) -> int:
    """How many different multisets a bootstrap can draw from ``n`` units: C(2n - 1, n).

    >>> [distinct_resamples(n) for n in (1, 2, 3, 5)]
    [1, 3, 10, 126]
    """
    return math.comb(2 * n - 1, n)


def small_sample_warning(n_seeds: int, n_cases: int) -> str | None:
    """One sentence when either level has fewer than :data:`MIN_UNITS` units, else None.

    >>> small_sample_warning(3, 1)
    'not informative: 3 seeds (at most 10 distinct resamples) and 1 case; fewer than 5 \
independent units at a level leave its variation unmeasured'
    >>> small_sample_warning(5, 20) is None
    True
    """
    small = [(n, name) for n, name in ((n_seeds, "seed"), (n_cases, "case")) if n < MIN_UNITS]
    if not small:
        return None
    parts = [f"{n} {name}{'s' if n != 1 else ''}"
             + (f" (at most {distinct_resamples(n)} distinct resamples)" if n > 1 else "")
             for n, name in small]
    return (f"not informative: {' and '.join(parts)}; fewer than {MIN_UNITS} independent "
            "units at a level leave its variation unmeasured")


@dataclass(frozen=True)
class Interval:
    """A mean difference, its bootstrap interval and the units it rests on."""

    mean: float
    low: float
    high: float
    n_seeds: int
    n_cases: int

    @property
    def warning(self) -> str | None:
        """See :func:`small_sample_warning`."""
        return small_sample_warning(self.n_seeds, self.n_cases)

    def to_dict(self) -> dict:
        """``{"mean", "ci95": [low, high], "n_seeds", "n_cases", "warning"}``."""
        return {"mean": self.mean, "ci95": [self.low, self.high], "n_seeds": self.n_seeds,
                "n_cases": self.n_cases, "warning": self.warning}


def cluster_bootstrap(
    table: Sequence[Sequence[float]] | np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> Interval:
    """Mean of a seeds x cases table of paired differences and its percentile interval.

    Each resample draws the S rows (seeds) with replacement and, independently, the C
    columns (cases) with replacement, the same columns for every row, and takes the mean of
    the S x C values so drawn; the interval is read off the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of those means.

    Args:
        table: (S, C) differences, e.g. variant minus plain for each seed (row) and case
            (column), the classes averaged inside each case. One column: seeds only.
        resamples: number of bootstrap resamples.
        seed: seed of the resampling generator.
        level: coverage of the interval.

    Returns:
        :class:`Interval` with ``n_seeds = S`` and ``n_cases = C``.

    Three seeds: the smallest resample mean (every draw the lowest seed) has probability
    1/27, above 2.5%, so the 95% interval is the range of the three values, whatever they
    are; equal differences leave no doubt.

    >>> cluster_bootstrap([[0.0], [0.25], [0.5]])
    Interval(mean=0.25, low=0.0, high=0.5, n_seeds=3, n_cases=1)
    >>> i = cluster_bootstrap([[0.02, 0.02], [0.02, 0.02]]); round(i.low, 9), round(i.high, 9)
    (0.02, 0.02)

    What resampling (seed, class) pairs as independent gets wrong: 3 seeds, 10 classes, one
    case. The seeds disagree (one gains 0.1 everywhere, two gain nothing); within a seed
    the classes agree. The 30 pairs, resampled as 30 units, give a tight interval away from
    0; the 3 seeds, the design's independent units, reach 0.

    >>> pairs = np.repeat([0.1, 0.0, 0.0], 10)
    >>> naive = cluster_bootstrap(pairs[:, None])          # 30 "seeds" of one case
    >>> round(naive.low, 3), round(naive.high, 3)
    (0.017, 0.05)
    >>> design = cluster_bootstrap([[pairs[:10].mean()], [0.0], [0.0]])
    >>> design.low, round(design.high, 3)
    (0.0, 0.1)
    """
    values = np.asarray(table, dtype=float)
    if values.ndim != 2 or not values.size:
        raise ValueError(f"cluster_bootstrap needs a non-empty seeds x cases table, got "
                         f"shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("cluster_bootstrap needs finite differences")
    seeds, cases = values.shape
    rng = np.random.default_rng(seed)
    # counts of each seed and case in each resample; the mean over the drawn rows and
    # columns is then a weighted sum, without materialising resamples x S x C values
    row_counts = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=resamples)
    column_counts = rng.multinomial(cases, np.full(cases, 1 / cases), size=resamples)
    means = np.einsum("rs,sc,rc->r", row_counts, values, column_counts) / (seeds * cases)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(values.mean()), float(low), float(high), seeds, cases)
