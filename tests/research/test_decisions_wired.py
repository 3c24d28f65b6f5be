"""The decisions of a sweep on a real store: power figures and Holm-adjusted p-values on the
parent, the gated `best` alias, and `--alpha` refused before any run exists."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
import math

import pytest
from mlflow import MlflowClient

from helpers import children_of, unique, write_sweep
from mlproject.cli import main
from mlproject.research.ablation import AblationJob, run_ablation
from mlproject.research.compare import CompareJob, run_compare
from mlproject.research.describe import gate_alias
from mlproject.research.power import paired_power
from mlproject.research.results import aggregate
from mlproject.research.targets import target_figures
from mlproject.research.time_to_target import CurvePoint


def _run(job_runner, job):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        outcome = job_runner(job)
    return outcome, out.getvalue()


@pytest.fixture(scope="module")
def lopsided_compare(session_env):
    """gpt2 (the baseline) with a learning rate 100x too small against gpt3 over 3 seeds, with
    `register_best`: gpt3 beats the baseline by a mile. (outcome, output, registered name)."""
    name = unique("gated")
    path = write_sweep(session_env / "lopsided.yaml", unique("lopsided"),
                       extra={"compare": {"models": ["gpt2", "gpt3"], "seeds": [1, 2, 3], "register_best": name,
                                          "target": ["val_loss=100", "val_loss=0.01"]},
                              "per_model": {"gpt2": {"train": {"learning_rate": 1e-5}},
                                            "gpt3": {"train": {"learning_rate": 1e-3}}}})
    outcome, out = _run(run_compare, CompareJob.load(path))
    return outcome, out, name


@pytest.fixture(scope="module")
def dropout_ablation(session_env):
    """An ablation of dropout 0.0 (baseline) against 0.3 and 0.6 over 2 seeds, with
    `register_best`: two candidates, so Holm applies; neither should beat the baseline."""
    name = unique("stays")
    path = write_sweep(session_env / "dropout.yaml", unique("dropout"),
                       extra={"ablation": {"ablation_axis": "dropout", "ablation_values": ["0.0", "0.3", "0.6"],
                                           "seeds": [1, 2], "register_best": name}})
    outcome, out = _run(run_ablation, AblationJob.load(path))
    return outcome, out, name


def _losses(parent_run_id: str, group_tag: str) -> dict[tuple[str, int], float]:
    return {(c.data.tags[group_tag], int(c.data.tags["mlproject.seed"])): c.data.metrics["val_loss_best"]
            for c in children_of(parent_run_id)}


@pytest.mark.e2e  # a whole sweep, trained once for the module
def test_power_figures_are_parent_metrics_and_in_the_summary(lopsided_compare):
    outcome, out, _ = lopsided_compare
    loss = _losses(outcome.parent_run_id, "mlproject.model_version")
    expected = paired_power([loss[("gpt3", s)] - loss[("gpt2", s)] for s in (1, 2, 3)])
    metrics = MlflowClient().get_run(outcome.parent_run_id).data.metrics
    prefix = "val_loss_best/gpt3-gpt2"
    assert metrics[f"{prefix}/min_detectable_diff"] == pytest.approx(expected.min_detectable_diff)
    assert metrics[f"{prefix}/seeds_needed"] == expected.seeds_needed
    assert metrics[f"{prefix}/effect_size"] == pytest.approx(expected.effect_size)
    assert f"{prefix}/p_holm" not in metrics  # one candidate is no family
    assert "power: gpt3 vs gpt2: 3 seeds: differences below" in out
    note = MlflowClient().get_run(outcome.parent_run_id).data.tags["mlflow.note.content"]
    assert "- gpt3 vs gpt2: 3 seeds: differences below" in note


@pytest.mark.e2e  # a whole sweep, trained once for the module
def test_the_alias_moves_to_a_candidate_that_beats_the_baseline_by_a_mile(lopsided_compare):
    outcome, out, name = lopsided_compare
    client = MlflowClient()
    gpt3 = [c for c in children_of(outcome.parent_run_id) if c.data.tags["mlproject.model_version"] == "gpt3"]
    best = min(gpt3, key=lambda c: c.data.metrics["val_loss_best"])
    version = client.get_model_version_by_alias(name, "best")
    assert version.run_id == best.info.run_id
    tags = client.get_run(outcome.parent_run_id).data.tags
    assert tags["mlproject.best_alias.decision"] == "moved"
    assert tags["mlproject.best_alias.reason"].startswith("gpt3 beat gpt2: ")
    paired = outcome.stats.paired["val_loss_best"]["gpt3"]
    assert version.tags["mlproject.evidence.group"] == "gpt3"
    assert float(version.tags["mlproject.evidence.difference"]) == pytest.approx(paired.mean_diff)
    assert float(version.tags["mlproject.evidence.p_adjusted"]) == pytest.approx(paired.p_value)
    assert version.tags["mlproject.evidence.n"] == "3"
    assert "alias best: gpt3 beat gpt2" in out


@pytest.mark.e2e  # a whole sweep, trained once for the module
def test_ablation_reports_holm_beside_raw_p_and_significance_follows_it(dropout_ablation, tmp_path):
    outcome, out, _ = dropout_ablation
    metrics = MlflowClient().get_run(outcome.parent_run_id).data.metrics
    raw = {g: metrics[f"val_loss_best/{g}-0.0/p_value"] for g in ("0.3", "0.6")}
    low, high = sorted(raw, key=raw.get)
    # Holm's step-down for two tests: the smaller p times 2, the larger at least that and itself.
    assert metrics[f"val_loss_best/{low}-0.0/p_holm"] == pytest.approx(min(1.0, 2 * raw[low]))
    assert metrics[f"val_loss_best/{high}-0.0/p_holm"] == pytest.approx(max(min(1.0, 2 * raw[low]), raw[high]))
    summary = json.loads(Path(MlflowClient().download_artifacts(outcome.parent_run_id, "summary.json",
                                                                str(tmp_path))).read_text())
    assert summary["holm"]["val_loss_best"][low]["p_holm"] == pytest.approx(min(1.0, 2 * raw[low]))
    assert "p_holm" in out and "significant: the Holm-adjusted p <= α = 0.05" in out
    assert "2 seeds: the test has no power to speak of" in out


@pytest.mark.e2e  # a whole sweep, trained once for the module
def test_the_alias_stays_on_the_baseline_when_no_candidate_beats_it(dropout_ablation):
    outcome, _, name = dropout_ablation
    client = MlflowClient()
    tags = client.get_run(outcome.parent_run_id).data.tags
    assert tags["mlproject.best_alias.decision"] == "stayed"
    assert tags["mlproject.best_alias.reason"] == "no candidate beat 0.0 at α = 0.05 (Holm)"
    baseline = [c for c in children_of(outcome.parent_run_id) if c.data.tags["mlproject.ablation_value"] == "0.0"]
    version = client.get_model_version_by_alias(name, "best")
    assert version.run_id == min(baseline, key=lambda c: c.data.metrics["val_loss_best"]).info.run_id
    assert version.tags["mlproject.evidence.decision"] == "stayed"
    assert "no candidate beat 0.0 at α = 0.05 (Holm)" in tags["mlflow.note.content"]


@pytest.mark.e2e  # a whole sweep, trained once for the module
def test_the_gate_keeps_the_alias_on_a_baseline_that_wins(lopsided_compare):
    """The same finished children with the better model as baseline: nothing beats it."""
    outcome, _, _ = lopsided_compare
    stats = aggregate(outcome.rows, ["gpt3", "gpt2"], ["val_loss_best"])
    decision = gate_alias(stats, outcome.rows, "val_loss_best")
    gpt3 = [r for r in outcome.rows if r["group"] == "gpt3"]
    assert not decision.moved and decision.group == "gpt3"
    assert decision.run_id == min(gpt3, key=lambda r: r["val_loss_best"])["run_id"]


def test_alpha_outside_0_1_is_refused_before_any_run_exists(research_env, tmp_path, capsys):
    experiment = unique("alpha")
    path = write_sweep(tmp_path / "c.yaml", experiment, extra={"compare": {"seeds": [1]}})
    assert main(["compare", "--config", str(path), "--alpha", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "alpha" in err and "1.5" in err and "(0, 1)" in err
    assert MlflowClient().get_experiment_by_name(experiment) is None


def _curve(*points: tuple[float, float]) -> list[CurvePoint]:
    return [CurvePoint(tokens=t, seconds=t / 100, flops=t * 6, value=v) for t, v in points]


def test_time_to_target_figures_count_not_reached_apart_and_pair_the_speedup():
    rows = [{"run_id": f"{g}{s}", "status": "FINISHED", "group": g, "seed": s} for g in ("a", "b") for s in (1, 2, 3)]
    curves = {"a1": _curve((100, 6.0), (300, 4.0)), "a2": _curve((100, 6.0), (300, 4.0)),  # 5.0 at 200 tokens
              "a3": _curve((100, 6.0), (300, 5.5)),                                           # never reached
              "b1": _curve((100, 5.0), (300, 3.0)), "b2": _curve((100, 5.5), (200, 4.5)),   # at 100 and 150
              "b3": _curve((100, 4.0), (300, 3.5))}                                          # at its first eval
    metrics, lines = target_figures(rows, ["a", "b"], "val_loss", 5.0, 0.01, curves)
    assert metrics["ttt/val_loss_5/a/fraction_reached"] == pytest.approx(2 / 3)
    assert metrics["ttt/val_loss_5/a/tokens_mean"] == pytest.approx(200)  # over the two that reached it
    assert metrics["ttt/val_loss_5/b/tokens_mean"] == pytest.approx((100 + 150 + 100) / 3)
    assert metrics["ttt/val_loss_5/b/flops_mean"] == pytest.approx(6 * 350 / 3)
    # paired over seeds 1 and 2 (seed 3's baseline never reached): geometric mean of 200/100, 200/150
    assert metrics["ttt/val_loss_5/b/speedup"] == pytest.approx(math.sqrt(2 * 200 / 150))
    assert "a: reached by 2/3 seeds" in lines[1] and "speedup vs a" in lines[2]


@pytest.mark.e2e  # a whole sweep, trained once for the module
def test_targets_are_logged_on_the_parent(lopsided_compare):
    outcome, out, _ = lopsided_compare
    metrics = MlflowClient().get_run(outcome.parent_run_id).data.metrics
    for group in ("gpt2", "gpt3"):  # every child's first evaluation is below 100
        assert metrics[f"ttt/val_loss_100/{group}/fraction_reached"] == 1.0
        assert metrics[f"ttt/val_loss_0.01/{group}/fraction_reached"] == 0.0
        assert f"ttt/val_loss_0.01/{group}/tokens_mean" not in metrics  # not reached is no number
        assert metrics[f"ttt/val_loss_100/{group}/final_p_value"] < 0.01
    assert metrics["ttt/val_loss_100/gpt3/speedup"] == pytest.approx(1.0)
    assert "time to val_loss = 100" in out and "gpt2: reached by 0/3 seeds" in out


@pytest.mark.parametrize("target, message", [("val_los=5", "no evaluation logs 'val_los'"),
                                             ("val_loss", "expected metric=value")])
def test_a_bad_target_is_refused_before_any_run_exists(research_env, tmp_path, capsys, target, message):
    experiment = unique("target")
    path = write_sweep(tmp_path / "c.yaml", experiment, extra={"compare": {"seeds": [1]}})
    assert main(["compare", "--config", str(path), "--target", target]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert MlflowClient().get_experiment_by_name(experiment) is None
