"""The comparison's statistics: the seeds x cases bootstrap and its small-sample warning."""

from __future__ import annotations

import numpy as np
import pytest

from morse.experiments.stats import cluster_bootstrap, small_sample_warning


def test_pairs_resampled_as_independent_look_precise_where_the_seeds_do_not():
    """3 seeds x 10 classes, one case: one seed gains 0.1 in every class, two gain nothing.
    As 30 independent pairs the interval excludes 0; over the 3 seeds it runs from 0 to 0.1."""
    per_seed = np.array([0.1, 0.0, 0.0])
    pairs = np.repeat(per_seed, 10)
    naive = cluster_bootstrap(pairs[:, None])
    design = cluster_bootstrap(per_seed[:, None])
    assert naive.low > 0.01 and naive.high < 0.06
    assert (design.low, design.high) == pytest.approx((0.0, 0.1))
    assert design.mean == pytest.approx(naive.mean)


def test_one_case_draw_serves_every_seed():
    """Cases that differ alike under every seed (+1 and -1): drawing the cases once per
    resample keeps that spread whatever the number of seeds; drawing them afresh per seed
    would average it away as seeds grow."""
    table = np.tile([1.0, -1.0], (20, 1))
    interval = cluster_bootstrap(table)
    assert (interval.n_seeds, interval.n_cases) == (20, 2)
    assert (interval.low, interval.high) == pytest.approx((-1.0, 1.0))


def test_three_seeds_give_the_range_of_their_values():
    interval = cluster_bootstrap([[0.3], [-0.2], [0.05]])
    assert (interval.low, interval.high) == pytest.approx((-0.2, 0.3))


def test_seeds_and_cases_both_widen_the_interval():
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 1, (8, 1))
    case_effect = rng.normal(0, 1, (1, 8))
    both = cluster_bootstrap(seed_effect + case_effect)
    seeds_only = cluster_bootstrap(seed_effect + np.zeros((1, 8)))
    cases_only = cluster_bootstrap(case_effect + np.zeros((8, 1)))
    width = lambda i: i.high - i.low  # noqa: E731
    assert width(both) > max(width(seeds_only), width(cases_only))


@pytest.mark.parametrize("seeds, cases, expected", [
    (3, 40, "not informative: 3 seeds (at most 10 distinct resamples);"),
    (10, 1, "not informative: 1 case;"),
    (5, 5, None),
])
def test_fewer_than_five_units_at_a_level_are_flagged(seeds, cases, expected):
    warning = small_sample_warning(seeds, cases)
    assert warning == expected if expected is None else warning.startswith(expected)
    interval = cluster_bootstrap(np.zeros((seeds, cases)))
    assert interval.to_dict()["warning"] == warning


def test_a_non_finite_or_empty_table_is_refused():
    with pytest.raises(ValueError, match="finite"):
        cluster_bootstrap([[float("inf")]])
    with pytest.raises(ValueError, match="seeds x cases"):
        cluster_bootstrap([1.0, 2.0])
