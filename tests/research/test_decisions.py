"""Power of a paired comparison, Holm-adjusted p-values and the gated `best` alias."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from statsmodels.stats.power import TTestPower

from mlproject.errors import ConfigError
from mlproject.research.decisions import GroupResult, better, gate_best, holm, is_significant
from mlproject.research.power import check_alpha, paired_power, power_line, seeds_for


# --- power ---------------------------------------------------------------------------------

def test_seeds_for_a_medium_effect_match_the_textbook_value():
    # G*Power (Faul et al., 2007), one-sample/paired t, two-sided, d = 0.5, alpha 0.05, power 0.8: n = 34
    assert seeds_for(0.5, alpha=0.05, power=0.8) == 34
    assert TTestPower().power(effect_size=0.5, nobs=34, alpha=0.05) == pytest.approx(0.8078, abs=1e-4)


@pytest.mark.filterwarnings("error")  # statsmodels' solver warns and returns NaN for effects this large
@pytest.mark.parametrize("effect_size", [3.0, 5.0, 8.0])
def test_seeds_for_a_large_effect_is_the_smallest_count_with_the_power(effect_size):
    n = seeds_for(effect_size)
    assert TTestPower().power(effect_size=effect_size, nobs=n, alpha=0.05) >= 0.8
    assert n == 2 or not TTestPower().power(effect_size=effect_size, nobs=n - 1, alpha=0.05) >= 0.8  # NaN at df=1


def test_power_figures_equal_statsmodels_for_a_hand_computed_case():
    diffs = [-0.03, -0.01, -0.02, -0.04]  # mean -0.025, sd = sqrt(0.0005 / 3)
    p = paired_power(diffs, alpha=0.05)
    sd = math.sqrt(0.0005 / 3)
    assert p.n == 4 and p.mean_diff == pytest.approx(-0.025) and p.sd_diff == pytest.approx(sd)
    assert p.effect_size == pytest.approx(-0.025 / sd)
    d_min = TTestPower().solve_power(nobs=4, alpha=0.05, power=0.8, alternative="two-sided")
    assert p.min_detectable_diff == pytest.approx(d_min * sd)
    n_needed = TTestPower().solve_power(effect_size=0.025 / sd, alpha=0.05, power=0.8, alternative="two-sided")
    assert p.seeds_needed == max(2, math.ceil(n_needed))
    # at the minimum detectable difference the power is the target power, by definition
    assert TTestPower().power(effect_size=p.min_detectable_diff / sd, nobs=4, alpha=0.05) == pytest.approx(0.8)


def test_a_user_effect_sets_the_seeds_needed():
    diffs = [0.1, 0.3, 0.2, 0.25, 0.15]
    p = paired_power(diffs, effect=0.05)
    assert p.effect == 0.05
    assert p.seeds_needed == seeds_for(0.05 / p.sd_diff)
    assert p.seeds_needed > paired_power(diffs).seeds_needed  # a smaller effect needs more seeds


def test_one_seed_or_no_spread_is_not_computable_with_a_reason():
    one = paired_power([0.2])
    assert not one.computable and one.min_detectable_diff is None and "1 seed pair" in one.reason
    flat = paired_power([0.1, 0.1, 0.1])
    assert not flat.computable and flat.sd_diff == 0.0 and "no spread" in flat.reason
    assert all(v is None or not (isinstance(v, float) and math.isnan(v)) for v in flat.as_dict().values())


def test_two_seeds_say_plainly_that_the_test_has_no_power():
    line = power_line(paired_power([-0.02, -0.05]), "val_loss")
    assert line.startswith("2 seeds: the test has no power to speak of")
    assert "run at least 3 seeds" in line
    assert "no power to speak of" not in power_line(paired_power([-0.02, -0.05, -0.03, -0.04]), "val_loss")


def test_the_power_line_names_the_detectable_difference_and_the_seeds_needed():
    p = paired_power([-0.03, -0.01, -0.02, -0.04])
    line = power_line(p, "val_loss")
    assert f"{p.seeds_needed} seeds would detect" in line and "80% power" in line


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, "x"])
def test_alpha_outside_zero_one_is_a_one_line_error(alpha):
    with pytest.raises(ConfigError, match=r"alpha must be .*\(0, 1\)"):
        check_alpha(alpha)


# --- Holm ----------------------------------------------------------------------------------

def test_holm_matches_the_worked_example():
    raw = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}
    adj = holm(raw, alpha=0.05)
    assert [adj[k].p_holm for k in "abcd"] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [adj[k].p_raw for k in "abcd"] == [0.01, 0.04, 0.03, 0.005]
    # raw p 0.04 and 0.03 are below 0.05, yet not significant once adjusted
    assert [adj[k].significant for k in "abcd"] == [True, False, False, True]


def test_holm_leaves_a_comparison_without_p_out_of_the_family():
    adj = holm({"a": 0.02, "b": None, "c": 0.04})
    assert adj["b"].p_holm is None and not adj["b"].significant
    assert adj["a"].p_holm == pytest.approx(0.04) and adj["c"].p_holm == pytest.approx(0.04)


def test_one_comparison_is_unadjusted():
    assert holm({"gpt3": 0.03})["gpt3"].p_holm == pytest.approx(0.03)


def test_significance_is_at_most_alpha_on_the_adjusted_value():
    assert is_significant(0.05, 0.05) and not is_significant(0.0500001, 0.05) and not is_significant(None, 0.05)


# --- the gated alias -------------------------------------------------------------------------

@dataclass(frozen=True)
class Diff:
    n: int
    mean_diff: float
    ci_low: float | None
    ci_high: float | None


def _paired(baseline: np.ndarray, candidate: np.ndarray):
    from scipy import stats

    d = candidate - baseline
    ci = stats.t.interval(0.95, df=d.size - 1, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(d.size))
    return Diff(d.size, float(d.mean()), float(ci[0]), float(ci[1])), float(stats.ttest_rel(candidate, baseline).pvalue)


def _sweep(effects: dict[str, float], seeds: int, rng: np.random.Generator):
    """Final losses per group: a shared per-seed data-order effect plus noise plus the group's shift."""
    seed_effect = rng.normal(0, 0.05, seeds)
    losses = {g: 3.0 + shift + seed_effect + rng.normal(0, 0.02, seeds) for g, shift in effects.items()}
    names = list(effects)
    groups, p_raw = [GroupResult(names[0], float(losses[names[0]].mean()), f"{names[0]}-best")], {}
    for g in names[1:]:
        diff, p_raw[g] = _paired(losses[names[0]], losses[g])
        groups.append(GroupResult(g, float(losses[g].mean()), f"{g}-best", diff))
    adj = {g: a.p_holm for g, a in holm(p_raw).items()}
    return groups, adj


def test_the_alias_stays_on_the_baseline_when_a_candidate_is_better_by_noise(monkeypatch):
    # statsmodels' Holm calls gc.collect() on every call: a second each in a worker whose heap
    # holds torch and MLflow. Skipping the collection changes no number.
    monkeypatch.setattr("gc.collect", lambda *args: 0)
    rng = np.random.default_rng(0)
    stayed = 0
    for _ in range(40):
        groups, adj = _sweep({"gpt2": 0.0, "gpt3": 0.0, "gpt3-swiglu": 0.0}, seeds=4, rng=rng)
        decision = gate_best(groups, "minimize", adj, alpha=0.05, metric="val_loss")
        stayed += not decision.moved
        best_mean = min(groups, key=lambda g: g.mean)
        if best_mean.group != "gpt2" and not decision.moved:
            assert decision.run_id == "gpt2-best"
            assert decision.reason == "no candidate beat gpt2 at α = 0.05 (Holm)"
            assert decision.evidence["decision"] == "stayed"
    assert stayed >= 0.9 * 40  # Holm's family-wise error is at most alpha (an expected 1 move in 40)


def test_the_alias_moves_when_the_candidate_is_better_by_a_mile():
    # a baseline whose learning rate is 100x too small ends far above the others
    groups, adj = _sweep({"gpt2-lr-tiny": 1.5, "gpt2": 0.0, "gpt3": 0.3}, seeds=4, rng=np.random.default_rng(1))
    decision = gate_best(groups, "minimize", adj, alpha=0.05, metric="val_loss")
    assert decision.moved and decision.group == "gpt2" and decision.run_id == "gpt2-best"
    assert decision.reason.startswith("gpt2 beat gpt2-lr-tiny: −1.")
    assert "p_holm = " in decision.reason and decision.reason.endswith("n = 4")
    ev = decision.evidence
    assert ev["metric"] == "val_loss" and ev["n"] == "4" and float(ev["p_adjusted"]) <= 0.05
    assert float(ev["ci_low"]) < float(ev["difference"]) < float(ev["ci_high"]) < 0


def test_a_significantly_worse_candidate_never_takes_the_alias():
    groups = [GroupResult("gpt2", 3.0, "b"), GroupResult("gpt3", 3.5, "c", Diff(4, 0.5, 0.4, 0.6))]
    assert not gate_best(groups, "minimize", {"gpt3": 0.001}).moved
    assert gate_best(groups, "maximize", {"gpt3": 0.001}).group == "gpt3"  # higher is better for accuracy


def test_among_candidates_with_evidence_the_best_mean_wins():
    groups = [GroupResult("base", 3.0, "b"),
              GroupResult("noisy-best", 2.0, "n", Diff(4, -1.0, -3.0, 1.0)),  # better mean, no evidence
              GroupResult("clear", 2.5, "c", Diff(4, -0.5, -0.6, -0.4)),
              GroupResult("clearer", 2.4, "d", Diff(4, -0.6, -0.7, -0.5))]
    decision = gate_best(groups, "minimize", {"noisy-best": 0.3, "clear": 0.001, "clearer": 0.002})
    assert decision.group == "clearer" and decision.run_id == "d"


def test_an_unknown_direction_is_a_one_line_error():
    with pytest.raises(ConfigError, match="direction must be one of minimize, maximize, got 'lower'"):
        better(-1.0, "lower")
