"""Statistics across seeds, checked against hand computations."""

from __future__ import annotations

import math

import pytest

from mlproject.stats import paired_comparison, summarize, t_interval

T_975_DF2 = 4.302652729749464  # Student t quantile, 97.5%, 2 degrees of freedom (tables: 4.303)


def test_summarize_gives_mean_sample_std_and_t_interval():
    s = summarize([1.0, 2.0, 4.0])
    mean, std = 7 / 3, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    half = T_975_DF2 * std / math.sqrt(3)
    assert (s.n, s.mean, s.std) == (3, pytest.approx(mean), pytest.approx(std))
    assert (s.ci_low, s.ci_high) == (pytest.approx(mean - half), pytest.approx(mean + half))


def test_summarize_of_one_value_has_no_spread_or_interval():
    s = summarize([3.5])
    assert (s.n, s.mean, s.std, s.ci_low, s.ci_high) == (1, 3.5, None, None, None)


def test_t_interval_is_wider_than_the_normal_approximation_for_few_seeds():
    low, high = t_interval([1.0, 2.0, 4.0])
    normal_half = 1.959964 * summarize([1.0, 2.0, 4.0]).std / math.sqrt(3)
    assert (high - low) / 2 > 2 * normal_half


def test_paired_comparison_matches_hand_computed_t_test():
    baseline = {42: 3.0, 43: 3.2, 44: 3.1}
    candidate = {42: 2.9, 43: 3.0, 44: 3.05}
    p = paired_comparison(baseline, candidate)
    diffs = [-0.1, -0.2, -0.05]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    t = mean / (sd / math.sqrt(3))
    # With 2 degrees of freedom the t distribution has a closed form: P(|T| > t) = 1 - t / sqrt(t^2 + 2).
    p_hand = 1 - abs(t) / math.sqrt(t * t + 2)
    assert p.n == 3
    assert p.mean_diff == pytest.approx(mean)
    assert p.p_value == pytest.approx(p_hand, rel=1e-6)
    assert (p.ci_low, p.ci_high) == (pytest.approx(mean - T_975_DF2 * sd / math.sqrt(3)),
                                     pytest.approx(mean + T_975_DF2 * sd / math.sqrt(3)))


def test_paired_comparison_uses_only_seeds_both_groups_have():
    p = paired_comparison({1: 1.0, 2: 2.0, 3: 3.0}, {1: 1.5, 2: 2.5})
    assert p.n == 2 and p.mean_diff == pytest.approx(0.5)


def test_paired_comparison_without_shared_seeds_is_none():
    assert paired_comparison({1: 1.0}, {2: 1.0}) is None
