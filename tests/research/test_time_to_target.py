"""Time-to-target: the interpolated crossing, group summaries, the paired speedup and the
modded-nanogpt record test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mlproject.errors import ConfigError
from mlproject.research.time_to_target import (NOT_REACHED, Crossing, CurvePoint, final_below_target, speedup,
                                               summarize_reach, time_to_target)


def curve(values: list[float], tokens_per_eval: float = 1000.0) -> list[CurvePoint]:
    """Evaluations every 1,000 tokens, 2 s and 6e9 FLOPs apart."""
    return [CurvePoint(tokens=(i + 1) * tokens_per_eval, seconds=(i + 1) * 2.0, flops=(i + 1) * 6e9, value=v)
            for i, v in enumerate(values)]


def test_the_crossing_is_interpolated_between_the_bracketing_evaluations():
    c = time_to_target(curve([6.0, 5.5, 5.0, 4.8]), target=5.3)
    # 5.5 at 2,000 tokens, 5.0 at 3,000: 5.3 is 40% of the way
    assert c.reached
    assert c.tokens == pytest.approx(2400.0) and c.seconds == pytest.approx(4.8) and c.flops == pytest.approx(14.4e9)


def test_a_target_hit_exactly_at_an_evaluation_is_that_evaluation():
    c = time_to_target(curve([6.0, 5.5, 5.3, 5.0]), target=5.3)
    assert (c.tokens, c.seconds, c.flops) == (3000.0, 6.0, 18e9)


def test_a_curve_that_never_reaches_the_target_is_not_reached():
    c = time_to_target(curve([6.0, 5.8, 5.6, 5.5]), target=5.3)
    assert c == NOT_REACHED and not c.reached and c.tokens is None and str(c) == "not reached"


def test_the_first_crossing_counts_not_a_later_one():
    c = time_to_target(curve([6.0, 5.2, 5.6, 5.1]), target=5.3)
    assert c.tokens == pytest.approx(1000 + 1000 * (0.7 / 0.8))


def test_a_curve_already_beyond_the_target_crosses_at_its_first_evaluation():
    assert time_to_target(curve([5.0, 4.9]), target=5.3).tokens == 1000.0


def test_maximized_metrics_cross_upwards_and_nan_evaluations_are_skipped():
    c = time_to_target(curve([0.1, float("nan"), 0.3, 0.5]), target=0.4, direction="maximize")
    assert c.tokens == pytest.approx(3500.0)  # between 0.3 at 3,000 and 0.5 at 4,000 tokens


def test_a_group_mean_is_over_the_seeds_that_reached_with_the_fraction_beside_it():
    crossings = [Crossing(True, 2000.0, 4.0, 1e9), Crossing(True, 2600.0, 5.0, 1e9), Crossing(True, 2300.0, 4.5, 1e9),
                 NOT_REACHED]
    s = summarize_reach(crossings, "tokens")
    assert (s.n, s.n_reached, s.fraction_reached) == (4, 3, 0.75)
    low, high = stats.t.interval(0.95, df=2, loc=2300.0, scale=300.0 / math.sqrt(3))
    assert s.mean == pytest.approx(2300.0) and (s.ci_low, s.ci_high) == pytest.approx((low, high))
    assert summarize_reach(crossings, "seconds").mean == pytest.approx(4.5)


def test_no_seed_reached_gives_no_mean_rather_than_nan():
    s = summarize_reach([NOT_REACHED, NOT_REACHED])
    assert s.mean is None and s.ci_low is None and s.fraction_reached == 0.0


def test_an_unknown_quantity_is_a_one_line_error():
    with pytest.raises(ConfigError, match="quantity must be one of tokens, flops, seconds, got 'steps'"):
        summarize_reach([NOT_REACHED], "steps")


def test_the_speedup_ci_is_the_t_interval_of_the_log_ratios_exponentiated():
    base = {1: Crossing(True, 2000.0), 2: Crossing(True, 3000.0), 3: Crossing(True, 2400.0), 4: Crossing(True, 2000.0)}
    cand = {1: Crossing(True, 1600.0), 2: Crossing(True, 2000.0), 3: Crossing(True, 2000.0), 4: NOT_REACHED,
            5: Crossing(True, 100.0)}  # seed 4: candidate never reached; seed 5: no baseline
    s = speedup(base, cand)
    # by hand: log ratios ln(1.25), ln(1.5), ln(1.2); mean 0.2703, sd 0.1188, t_{0.975, 2} = 4.3027,
    # so the speedup is exp(0.2703) = 1.310 with CI exp(0.2703 -+ 0.2952) = [0.975, 1.760]
    logs = [math.log(1.25), math.log(1.5), math.log(1.2)]
    mean, sd = sum(logs) / 3, float(np.std(logs, ddof=1))
    assert mean == pytest.approx(0.2703, abs=1e-4) and sd == pytest.approx(0.1188, abs=1e-4)
    half = 4.3027 * sd / math.sqrt(3)
    assert s.n == 3
    assert s.ratio == pytest.approx(math.exp(mean)) and s.ratio == pytest.approx((1.25 * 1.5 * 1.2) ** (1 / 3))
    assert (s.ci_low, s.ci_high) == pytest.approx((math.exp(mean - half), math.exp(mean + half)), rel=1e-4)
    assert (s.ratio, s.ci_low, s.ci_high) == pytest.approx((1.310, 0.975, 1.760), abs=1e-3)


def test_a_speedup_with_one_shared_seed_has_no_interval():
    s = speedup({1: Crossing(True, 2000.0)}, {1: Crossing(True, 1000.0)})
    assert s.ratio == pytest.approx(2.0) and s.ci_low is None and s.ci_high is None


def test_the_record_test_is_scipys_one_sided_t_test():
    finals = [3.27, 3.276, 3.279, 3.274, 3.275, 3.273, 3.277, 3.271]
    t = final_below_target(finals, target=3.28)
    assert t.p_value == pytest.approx(stats.ttest_1samp(finals, 3.28, alternative="less").pvalue)
    assert t.passed and t.alpha == 0.01 and t.n == 8
    above = final_below_target([3.279, 3.283, 3.281], target=3.28)
    assert not above.passed and above.p_value > 0.01


def test_the_record_test_needs_two_runs_and_follows_the_direction():
    assert final_below_target([3.2], target=3.28).p_value is None
    assert final_below_target([0.61, 0.62, 0.63], target=0.6, direction="maximize", alpha=0.05).passed
