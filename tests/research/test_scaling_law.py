"""The scaling-law fitter against known answers: a law it must recover, the coverage of its
bootstrap intervals over many seeded draws, an iso-FLOP parabola, and fits that must not converge."""

import math

import numpy as np
import pytest

from mlproject.research.scaling_law import (FitStatus, Points, bootstrap_fit, compute_multiplier, compute_needed,
                                            fit_power_law, iso_flop_optimum, optimum_exponent, prediction_interval,
                                            resample_indices, within_rung_variance)

E, A, ALPHA = 2.0, 80.0, 0.2
COMPUTE = np.geomspace(1e9, 1e12, 6)


def law(c, e=E, a=A, alpha=ALPHA):
    return e + a * np.power(c, -alpha)


def noisy_points(rng, sd, seeds, e=E, a=A, alpha=ALPHA):
    return Points(list(COMPUTE), [{s: float(law(c, e, a, alpha) + rng.normal(0, sd)) for s in range(seeds)}
                                  for c in COMPUTE])


def test_exact_points_give_the_law_back():
    fit = fit_power_law(COMPUTE, law(COMPUTE))
    assert fit.status == FitStatus.OK
    assert fit.E == pytest.approx(E, rel=1e-5)
    assert fit.A == pytest.approx(A, rel=1e-4)
    assert fit.alpha == pytest.approx(ALPHA, rel=1e-5)
    assert max(abs(r) for r in fit.residuals) < 1e-6


def test_noisy_points_recover_the_law_inside_their_intervals():
    rng = np.random.default_rng(0)
    result = bootstrap_fit(noisy_points(rng, 0.01, 5), resample_indices([5] * 6, 1000, rng))
    assert result.n_boot == 1000 and result.n_failed == 0
    for interval, truth in ((result.E, E), (result.A, A), (result.alpha, ALPHA)):
        assert interval.low < truth < interval.high
    assert len(result.fit.residuals) == 30


def test_bootstrap_intervals_cover_the_true_law_at_the_nominal_rate():
    # 150 seeded data sets of 6 rungs x 8 seeds: the 95% intervals of alpha and E must hold the
    # true values about 95% of the time (a binomial 99% band around 0.95 at n = 150 is ~0.90-0.99;
    # the percentile bootstrap of 8 seeds runs a little narrow, (k-1)/k of the variance). 500
    # resamples per data set keep the test fast; the ladder itself uses at least 1,000.
    rng = np.random.default_rng(1234)
    draws, hits_alpha, hits_e = 150, 0, 0
    for _ in range(draws):
        result = bootstrap_fit(noisy_points(rng, 0.02, 8), resample_indices([8] * 6, 500, rng))
        hits_alpha += result.alpha.contains(ALPHA)
        hits_e += result.E.contains(E)
    assert 0.89 <= hits_alpha / draws <= 0.995
    assert 0.89 <= hits_e / draws <= 0.995


def test_held_out_prediction_interval_covers_new_means_at_the_nominal_rate():
    rng = np.random.default_rng(7)
    held_out, hits, draws = 3e12, 0, 150
    for _ in range(draws):
        points = noisy_points(rng, 0.02, 4)
        result = bootstrap_fit(points, resample_indices([4] * 6, 500, rng))
        interval = prediction_interval(result, held_out, 4, within_rung_variance(points), rng)
        measured = float(np.mean(law(held_out) + rng.normal(0, 0.02, 4)))
        hits += interval.contains(measured)
    assert 0.89 <= hits / draws <= 0.995


def test_compute_multiplier_of_two_known_laws():
    # the other group's loss at C is the baseline's at 2C when its A is 2^-alpha times smaller
    rng = np.random.default_rng(3)
    indices = resample_indices([6] * 6, 1000, rng)
    base = bootstrap_fit(noisy_points(rng, 0.002, 6), indices)
    other = bootstrap_fit(noisy_points(rng, 0.002, 6, a=A * 2 ** -ALPHA), indices)
    interval = compute_multiplier(base, other, at_compute=COMPUTE[-1])
    assert interval.estimate == pytest.approx(2.0, rel=0.1)
    assert interval.low < 2.0 < interval.high
    assert compute_needed(E, A, ALPHA, law(1e10)) == pytest.approx(1e10, rel=1e-9)
    assert math.isinf(float(compute_needed(E, A, ALPHA, E - 0.1)))


def test_iso_flop_optimum_of_a_synthetic_parabola():
    sizes = np.geomspace(1e6, 1e8, 7)
    n_opt = 1.3e7
    loss = 3.0 + 0.05 * (np.log(sizes) - math.log(n_opt)) ** 2
    profile = iso_flop_optimum(sizes, loss, compute=1e15)
    assert profile.status == FitStatus.OK
    assert profile.n_opt == pytest.approx(n_opt, rel=1e-6)


def test_optimum_exponent_of_known_optima():
    budgets = np.geomspace(1e15, 1e18, 4)
    assert optimum_exponent(budgets, 0.1 * budgets ** 0.5) == pytest.approx(0.5, rel=1e-9)


def test_a_flat_ladder_is_reported_as_not_converged():
    fit = fit_power_law(COMPUTE, np.full(6, 3.0))
    assert fit.status == FitStatus.ALPHA_AT_BOUND and not fit.converged


def test_a_metric_that_rises_with_compute_is_reported_as_not_converged():
    fit = fit_power_law(COMPUTE, 4.0 - law(COMPUTE) / 2)
    assert not fit.converged and fit.status in (FitStatus.NONPOSITIVE_A, FitStatus.ALPHA_AT_BOUND)


def test_non_finite_and_too_few_points_are_statuses():
    assert fit_power_law(COMPUTE, [3.0, math.nan, 2.0, 2.0, 2.0, 2.0]).status == FitStatus.NONFINITE
    assert fit_power_law(COMPUTE[:2], [3.0, 2.5]).status == FitStatus.TOO_FEW_POINTS
    assert iso_flop_optimum([1e6, 2e6], [3.0, 2.9]).status == FitStatus.TOO_FEW_POINTS
    assert iso_flop_optimum([1e6, 2e6, 4e6], [3.0, 2.0, 3.0]).status == FitStatus.OK
    assert iso_flop_optimum([1e6, 2e6, 4e6], [2.0, 3.0, 2.0]).status == FitStatus.NO_MINIMUM
