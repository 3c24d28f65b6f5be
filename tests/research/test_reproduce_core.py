"""Verdicts of a reproduction: per metric history, overall, and the TOST of a sweep's group means."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from mlproject.errors import ConfigError
from mlproject.research.reproduce import (EquivalenceVerdict, MetricVerdict, Verdict, judge_histories,
                                          judge_history, overall_verdict, overlay_plot, tost_verdict)

LOSS = [(0, 10.8), (2, 9.91), (4, 8.734), (6, 7.5), (8, 6.25)]


def test_the_same_values_at_the_same_steps_are_identical():
    verdict = judge_history("train_loss", LOSS, list(LOSS))
    assert verdict.verdict is Verdict.IDENTICAL and verdict.steps == 5
    assert verdict.describe() == "train_loss: identical (bitwise, 5 steps)"


def test_one_ulp_is_never_identical():
    nudged = [(s, math.nextafter(v, math.inf) if s == 6 else v) for s, v in LOSS]
    verdict = judge_history("train_loss", LOSS, nudged)
    assert verdict.verdict is Verdict.WITHIN_TOLERANCE and 0 < verdict.max_rel_diff < 1e-15
    assert judge_history("train_loss", LOSS, nudged, rtol=0).verdict is Verdict.DIFFERS


def test_signed_zero_and_nan_compare_by_bits():
    assert judge_history("lr", [(0, 0.0)], [(0, -0.0)]).verdict is Verdict.WITHIN_TOLERANCE
    assert judge_history("x", [(0, math.nan)], [(0, math.nan)]).verdict is Verdict.IDENTICAL
    assert judge_history("x", [(0, math.nan)], [(0, 1.0)]).verdict is Verdict.DIFFERS


def test_small_differences_are_within_tolerance():
    close = [(s, v * (1 + 5e-5)) for s, v in LOSS]
    verdict = judge_history("train_loss", LOSS, close)
    assert verdict.verdict is Verdict.WITHIN_TOLERANCE
    assert verdict.max_rel_diff == pytest.approx(5e-5, rel=1e-3)
    assert judge_history("train_loss", LOSS, close, rtol=1e-5).verdict is Verdict.DIFFERS


def test_a_divergence_names_its_first_step_and_size():
    diverged = [(s, v + (0.5 if s >= 4 else 0.0)) for s, v in LOSS]
    verdict = judge_history("train_loss", LOSS, diverged)
    assert (verdict.verdict, verdict.step, verdict.original, verdict.reproduced) == (Verdict.DIFFERS, 4, 8.734, 9.234)
    assert verdict.max_rel_diff == pytest.approx(0.5 / 6.75)
    assert verdict.describe().startswith("train_loss: differs from step 4 (8.734 vs 9.234, relative difference 0.0541")


def test_a_step_logged_by_one_side_only_differs():
    missing = [p for p in LOSS if p[0] != 4]
    verdict = judge_history("train_loss", LOSS, missing)
    assert verdict.verdict is Verdict.DIFFERS and verdict.step == 4
    assert verdict.note == "step 4 logged only by the original"
    extra = judge_history("train_loss", LOSS, [*LOSS, (10, 5.0)])
    assert (extra.verdict, extra.step, extra.note) == (Verdict.DIFFERS, 10, "step 10 logged only by the reproduction")


def test_a_shifted_step_is_found_where_the_steps_part():
    shifted = [(0, 10.8), (2, 9.91), (5, 8.734), (6, 7.5), (8, 6.25)]
    verdict = judge_history("train_loss", LOSS, shifted)
    assert (verdict.step, verdict.steps, verdict.max_rel_diff) == (4, 2, 0.0)
    assert verdict.note == "step 4 logged only by the original"


def test_timings_and_system_metrics_are_not_judged():
    original = {"train_loss": LOSS, "tokens_per_sec": [(2, 1e4)], "system/cpu_utilization_percentage": [(0, 50.0)]}
    reproduced = {"train_loss": LOSS, "tokens_per_sec": [(2, 2e4)]}
    assert [v.metric for v in judge_histories(original, reproduced)] == ["train_loss"]


def test_a_shorter_rerun_is_compared_up_to_its_last_step():
    verdict = judge_history("train_loss", LOSS, LOSS[:3], max_step=4)
    assert verdict.verdict is Verdict.IDENTICAL and verdict.steps == 3


def test_a_shortened_rerun_s_own_end_of_run_evaluation_is_not_judged():
    val = [(4, 7.1), (8, 6.3)]
    stopped_at_6 = [(4, 7.1), (6, 6.8)]  # the run stopped at 6 evaluates there; the original never did
    assert judge_history("val_loss", val, stopped_at_6, max_step=6).verdict is Verdict.IDENTICAL
    assert judge_history("val_loss", val, [(4, 7.1), (5, 6.9)], max_step=6).verdict is Verdict.DIFFERS
    # a metric the original first logged after the stop (an end-of-run summary) is not judged at all
    verdicts = judge_histories({"val_loss": val, "val_loss_best": [(8, 6.3)]},
                               {"val_loss": stopped_at_6, "val_loss_best": [(6, 6.8)]}, max_step=6)
    assert [(v.metric, v.verdict) for v in verdicts] == [("val_loss", Verdict.IDENTICAL)]


def test_the_worst_verdict_wins_and_a_missing_metric_differs():
    original = {"train_loss": LOSS, "val_loss": [(4, 9.0), (8, 7.0)], "lr": [(0, 0.0), (2, 1e-3)]}
    reproduced = {"train_loss": LOSS, "lr": [(0, 0.0), (2, 1e-3 * (1 + 1e-6))]}
    verdicts = judge_histories(original, reproduced)
    assert [(v.metric, v.verdict) for v in verdicts] == [
        ("lr", Verdict.WITHIN_TOLERANCE), ("train_loss", Verdict.IDENTICAL), ("val_loss", Verdict.DIFFERS)]
    assert verdicts[2].describe() == "val_loss: differs: not logged by the reproduction"
    assert overall_verdict(verdicts) is Verdict.DIFFERS
    assert overall_verdict(verdicts[:2]) is Verdict.WITHIN_TOLERANCE
    assert overall_verdict(verdicts[1:2]) is Verdict.IDENTICAL
    assert overall_verdict([]) is Verdict.DIFFERS


def test_a_negative_rtol_is_refused():
    with pytest.raises(ConfigError, match="rtol must be a non-negative number, got -1"):
        judge_history("x", LOSS, LOSS, rtol=-1)


# The sweep verdict: TOST at +-margin


def test_paired_tost_matches_statsmodels_on_a_hand_case():
    original = {1: 1.80, 2: 1.83, 3: 1.79, 4: 1.82}
    reproduced = {1: 1.801, 2: 1.828, 3: 1.792, 4: 1.819}
    verdict = tost_verdict(original, reproduced, 0.01, unit="bpb")
    x1, x0 = np.array(list(reproduced.values())), np.array(list(original.values()))
    expected = ttost_paired(x1, x0, -0.01, 0.01)[0]
    assert verdict.paired and verdict.p_value == pytest.approx(expected, rel=1e-12)
    assert verdict.mean_difference == pytest.approx(0.0, abs=1e-12)
    # by hand: differences +1, -2, +2, -1 (x 1e-3), sd sqrt(10/3) e-3; two one-sided t-tests on 3 df
    se = math.sqrt(10 / 3) * 1e-3 / 2
    assert expected == pytest.approx(stats.t.sf(0.01 / se, 3), rel=1e-9)
    assert verdict.equivalent and verdict.describe() == "reproduced (equivalent within ±0.01 bpb, p < 0.001)"


def test_unpaired_tost_matches_welch_in_statsmodels():
    original = {1: 1.80, 2: 1.83, 3: 1.79}
    reproduced = {7: 1.81, 8: 1.80, 9: 1.82, 10: 1.805}
    verdict = tost_verdict(original, reproduced, 0.05)
    expected = ttost_ind(np.array(list(reproduced.values())), np.array(list(original.values())), -0.05, 0.05,
                         usevar="unequal")[0]
    assert not verdict.paired and verdict.p_value == pytest.approx(expected, rel=1e-12)


def test_equivalent_data_is_shown_equivalent_and_shifted_data_is_not():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.002, 10)
    original = {seed: 1.8 + 0.01 * rng.normal() for seed in range(10)}
    same = {seed: v + noise[seed] for seed, v in original.items()}
    shifted = {seed: v + 0.02 + noise[seed] for seed, v in original.items()}
    assert tost_verdict(original, same, 0.01).equivalent
    verdict = tost_verdict(original, shifted, 0.01, unit="bpb")
    assert not verdict.equivalent and verdict.p_value > 0.05
    assert verdict.describe().startswith("not shown equivalent within ±0.01 bpb: p = ")


def test_a_bitwise_reproduction_of_every_seed_is_equivalent():
    original = {1: 1.8, 2: 1.9, 3: 1.85}
    verdict = tost_verdict(original, dict(original), 0.01)
    assert verdict.equivalent and verdict.p_value == 0.0 and verdict.mean_difference == 0.0
    off = tost_verdict(original, {s: v + 0.02 for s, v in original.items()}, 0.01)
    assert not off.equivalent and "every seed differs by 0.02" in off.reason


def test_one_seed_cannot_be_shown_equivalent():
    verdict = tost_verdict({1: 1.8}, {1: 1.8}, 0.01)
    assert isinstance(verdict, EquivalenceVerdict) and not verdict.equivalent
    assert verdict.reason == "a t-test needs at least 2 values per group"


@pytest.mark.parametrize("margin", [0, -0.1, math.nan, None])
def test_a_margin_must_be_positive(margin):
    with pytest.raises(ConfigError, match="margin must be a positive number"):
        tost_verdict({1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0}, margin)


def test_the_tost_holds_its_size_in_a_seeded_simulation():
    """At a true difference equal to the margin, TOST rejects in at most alpha of the trials."""
    rng = np.random.default_rng(7)
    trials, hits = 400, 0
    for _ in range(trials):
        base = rng.normal(1.8, 0.01, 8)
        original = dict(enumerate(base))
        reproduced = dict(enumerate(base + 0.01 + rng.normal(0, 0.004, 8)))
        hits += tost_verdict(original, reproduced, 0.01).equivalent
    assert hits / trials <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / trials)


def test_the_overlay_plot_is_a_png_with_both_curves(tmp_path):
    path = overlay_plot({"train_loss": LOSS, "val_loss": [(4, 9.0), (8, 7.0)]},
                        {"train_loss": LOSS[:3]}, tmp_path / "plots" / "overlay.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["overlay.png"]  # no temporary left behind


def test_metric_verdict_is_a_plain_dataclass():
    verdict = MetricVerdict("x", Verdict.WITHIN_TOLERANCE, 3, 2e-5)
    assert verdict.describe() == "x: within tolerance (max relative difference 2e-05, 3 steps)"


def test_the_sweep_verdict_reads_as_the_report_prints_it():
    verdict = EquivalenceVerdict(True, 0.0213, 0.01, 0.001, True, 3, 3, unit="bpb")
    assert verdict.describe() == "reproduced (equivalent within ±0.01 bpb, p = 0.021)"


def test_a_bad_alpha_is_refused():
    with pytest.raises(ConfigError, match="alpha must be in"):
        tost_verdict({1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0}, 0.1, alpha=1.5)
