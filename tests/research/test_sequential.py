"""The group-sequential rule for adding seeds: boundaries of known designs, error rates by
simulation, and decisions that depend only on the looks so far."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from mlproject.errors import ConfigError
from mlproject.research.sequential import (crossing_probability, design, evaluate, look_schedule, obf_spending,
                                           null_look_statistics, spending_boundaries, t_to_z)

EQUAL_5 = [0.2, 0.4, 0.6, 0.8, 1.0]


def test_lan_demets_obrien_fleming_boundaries_match_the_published_design():
    # K = 5 equally spaced looks, two-sided alpha 0.05: gsDesign sfLDOF, Jennison & Turnbull
    plan = design(start=3, max_seeds=15, looks=5, alpha=0.05, calibrate=False)
    assert plan.seeds == (3, 6, 9, 12, 15) and plan.fractions == pytest.approx(EQUAL_5)
    assert plan.spending_alpha == 0.05
    assert plan.boundaries == pytest.approx([4.877, 3.357, 2.680, 2.290, 2.031], abs=1e-2)
    assert crossing_probability(plan.fractions, plan.boundaries) == pytest.approx(0.05, abs=1e-6)


def test_the_classical_obrien_fleming_design_is_reproduced_by_the_crossing_probability():
    # O'Brien & Fleming (1979): c_k = C sqrt(K / k) with C chosen for an overall alpha of 0.05
    def excess(c: float) -> float:
        return crossing_probability(EQUAL_5, [c * math.sqrt(5 / k) for k in range(1, 6)]) - 0.05

    c = optimize.brentq(excess, 1.5, 3.0)
    assert [c * math.sqrt(5 / k) for k in range(1, 6)] == pytest.approx([4.562, 3.226, 2.634, 2.281, 2.040],
                                                                         abs=1e-2)


def test_the_small_sample_calibration_spends_a_little_less_alpha():
    normal, calibrated = design(3, 15, 5, calibrate=False), design(3, 15, 5)
    assert 0.04 < calibrated.spending_alpha < 0.05 and calibrated.alpha == 0.05
    assert all(c > b for c, b in zip(calibrated.boundaries, normal.boundaries))
    # the uncalibrated rule rejects a true null too often with 3-15 seeds; the calibrated one does not
    z = np.abs(null_look_statistics(calibrated.seeds, 100_000, seed=7))
    assert np.mean((z >= np.asarray(normal.boundaries)).any(axis=1)) > 0.051
    assert np.mean((z >= np.asarray(calibrated.boundaries)).any(axis=1)) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 1e5)


def test_a_single_look_is_the_fixed_design():
    plan = design(start=4, max_seeds=4)
    assert plan.seeds == (4,) and plan.boundaries == pytest.approx([stats.norm.isf(0.025)])


def test_the_spending_function_spends_alpha_by_the_last_look():
    assert 2 * obf_spending(1.0, 0.05) == pytest.approx(0.05)
    assert obf_spending(0.2, 0.05) < 1e-6  # almost nothing at the first of five looks
    bounds = spending_boundaries(EQUAL_5, [obf_spending(t, 0.05) for t in EQUAL_5])
    # each look crosses with the alpha spent on it (both sides together)
    for k in range(1, 6):
        assert crossing_probability(EQUAL_5[:k], bounds[:k]) == pytest.approx(2 * obf_spending(EQUAL_5[k - 1], 0.05),
                                                                            abs=1e-8)


def test_the_look_statistic_is_the_normal_quantile_of_the_paired_t_p_value():
    diffs = [0.1, 0.5, 0.2, 0.3]
    t, z = t_to_z(diffs)
    test = stats.ttest_1samp(diffs, 0.0)
    assert t == pytest.approx(test.statistic)
    assert 2 * stats.norm.sf(abs(z)) == pytest.approx(test.pvalue) and z > 0
    assert t_to_z([-d for d in diffs])[1] == pytest.approx(-z)


def test_type_one_error_stays_at_alpha_in_a_seeded_simulation():
    plan, rng, draws = design(start=3, max_seeds=15, looks=5, alpha=0.05), np.random.default_rng(2024), 2000
    rejected = sum(evaluate(plan, list(rng.normal(0.0, 1.0, 15))).verdict in ("better", "worse")
                   for _ in range(draws))
    mc_error = math.sqrt(0.05 * 0.95 / draws)
    assert rejected / draws <= 0.05 + 2 * mc_error


def test_a_large_effect_stops_early_and_a_null_runs_to_max_seeds():
    plan = design(start=3, max_seeds=15, looks=5)
    large = evaluate(plan, [-1.0, -1.1, -0.9, -1.05, -0.95, -1.0])  # candidate far lower (better) loss
    assert large.verdict == "better" and len(large.looks) == 2 and large.looks[-1].n == 6
    assert large.next_seeds is None
    null = evaluate(plan, list(np.random.default_rng(5).normal(0.0, 1.0, 15)))
    assert [look.n for look in null.looks] == [3, 6, 9, 12, 15]
    assert all(look.decision == "continue" for look in null.looks)
    assert null.verdict == "no difference detectable with 15 seeds"


def test_worse_follows_the_metric_direction():
    plan = design(start=3, max_seeds=9, looks=3)
    higher = [0.5, 0.52, 0.49, 0.51, 0.5, 0.5]
    assert evaluate(plan, higher, "minimize").verdict == "worse"
    assert evaluate(plan, higher, "maximize").verdict == "better"


def test_a_resumed_sweep_takes_the_same_decisions():
    plan = design(start=3, max_seeds=15, looks=5)
    diffs = list(np.random.default_rng(11).normal(-0.4, 1.0, 15))
    full = evaluate(plan, diffs)
    for seen in range(3, 16):  # killed after any seed: the looks so far are a prefix of the full run's
        partial = evaluate(plan, diffs[:seen])
        assert partial.looks == full.looks[:len(partial.looks)]
        if partial.verdict is None:
            assert partial.next_seeds == plan.seeds[len(partial.looks)]
    before_first_look = evaluate(plan, diffs[:2])
    assert before_first_look.looks == () and before_first_look.next_seeds == 3


def test_the_schedule_rounds_from_start_to_max():
    assert look_schedule(2, 10, 3) == (2, 6, 10)
    assert look_schedule(3, 5) == (3, 4, 5)  # no more looks than seed counts


@pytest.mark.parametrize("start,max_seeds,looks,message", [
    (4, 3, None, "--adaptive-seeds 3 is below the starting seed count 4"),
    (1, 5, None, "at least 2 starting seeds, got 1"),
    (3, 5, 4, "looks must be between 1 and 3"),
])
def test_a_bad_design_is_a_one_line_error(start, max_seeds, looks, message):
    with pytest.raises(ConfigError, match=message):
        design(start, max_seeds, looks)


def test_alpha_outside_zero_one_is_refused():
    with pytest.raises(ConfigError, match=r"alpha must be in \(0, 1\), got 1.5"):
        design(3, 9, alpha=1.5)
