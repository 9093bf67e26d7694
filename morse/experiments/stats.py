"""Statistics of a comparison over seeds: mean and spread, and a paired bootstrap interval.

Pure functions of plain numbers (numpy only), so a reviewer can check them by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "mean_std", "paired_bootstrap_ci"]

#: Resamples of the paired bootstrap and the seed of its generator (results are reproducible).
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


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


def paired_bootstrap_ci(
    differences: Sequence[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Mean of paired differences and its percentile bootstrap interval.

    The pairs are resampled with replacement (each resample as many as there are pairs), the
    mean of each resample taken, and the interval read off the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of those means.

    Args:
        differences: one value per pair, e.g. variant minus plain for each (seed, class).
        resamples: number of bootstrap resamples.
        seed: seed of the resampling generator.
        level: coverage of the interval.

    Returns:
        ``(mean, low, high)``.

    Two pairs: a resample's mean is 0, 0.5 or 1 (probabilities 1/4, 1/2, 1/4), so the 95%
    interval runs from 0 to 1; equal differences leave no doubt.

    >>> paired_bootstrap_ci([0.0, 1.0])
    (0.5, 0.0, 1.0)
    >>> [round(v, 6) for v in paired_bootstrap_ci([0.02, 0.02, 0.02])]
    [0.02, 0.02, 0.02]
    """
    array = np.asarray(differences, dtype=float)
    if array.ndim != 1 or not array.size:
        raise ValueError(f"paired_bootstrap_ci needs a non-empty list of numbers, got {array}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, array.size, size=(resamples, array.size))
    means = array[picks].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(array.mean()), float(low), float(high)
