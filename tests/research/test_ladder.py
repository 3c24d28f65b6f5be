"""`ladder`: a scaling ladder on the sweep engine. Bad ladders are one-line errors before any run
exists; the plan sizes each child by its budget rule; the aggregate stage fits known laws; the
stages, the plot from the store and a resumed ladder run end to end on tiny models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mlflow import MlflowClient

from helpers import children_of, unique, write_sweep
from mlproject.cli import main
from mlproject.protocol import parse_step_result
from mlproject.research.distinct import check_groups_differ
from mlproject.research.ladder import LadderJob
from mlproject.research.ladder_report import analyze_ladder
from mlproject.research.ladder_summary import ladder_metrics, summary_lines

RUNGS = ["2x2x16", "2x2x24", "2x2x32", "2x2x48", "2x2x64"]


def _ladder_yaml(tmp_path, experiment=None, **ladder):
    settings = {"models": ["gpt2", "gpt3"], "rungs": RUNGS, "tokens": 256, "seeds": [1], "holdout": 1, **ladder}
    return write_sweep(tmp_path / "ladder.yaml", experiment or unique("ladder"), model={"attention_window": 8},
                       extra={"ladder": settings})


def _no_runs(experiment):
    found = MlflowClient().get_experiment_by_name(experiment)
    return found is None or not MlflowClient().search_runs([found.experiment_id])


@pytest.mark.parametrize("ladder, message", [
    ({"rungs": RUNGS[:4], "holdout": 1}, "leave 3 to fit"),
    ({"rungs": ["2x2x32", "2x2x24", "2x2x48", "2x2x64", "2x2x96"]},
     "rungs must increase in size: 2x2x24 (14,496 non-embedding params) is not larger than 2x2x32 (25,472) for gpt2"),
    ({"rungs": ["2x2x16", "tiny", "2x2x32", "2x2x48", "2x2x64"]}, "rung 'tiny' is neither a preset"),
    ({"iso_flop": [1e9, 2e9], "tokens": 100}, "two budget rules"),
    ({"bootstrap": 200}, "bootstrap=200 must be >= 1000"),
    ({"iso_flop": [1e9], "tokens": None, "holdout": 0}, "the exponent of N_opt needs at least 2"),
])
def test_a_bad_ladder_is_a_one_line_error_before_any_run_exists(research_env, tmp_path, capsys, ladder, message):
    experiment = unique("bad-ladder")
    path = _ladder_yaml(tmp_path, experiment, **ladder)
    assert main(["ladder", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert _no_runs(experiment)


def test_budget_rules_size_each_child(research_env, tmp_path):
    per_step = 4 * 32  # batch_size x block_size of the tiny config
    job = LadderJob.load(_ladder_yaml(tmp_path, tokens=None, tokens_per_param=20.0))
    cells = {c["label"]: c for c in job.cells()}
    cell = cells["gpt3@2x2x24"]
    assert cell["steps"] == round(20 * cell["params"] / per_step)
    children = job.children()
    assert len(children) == 2 * len(RUNGS) * 1
    assert children[0].cfg.train.max_steps == cells["gpt2@2x2x16"]["steps"]
    assert children[0].cfg.train.recipe == "gpt2"  # the baseline's recipe for every group

    iso = LadderJob.load(_ladder_yaml(tmp_path, tokens=None, iso_flop=[1e9, 4e9], rungs=RUNGS[:3], holdout=0))
    check_groups_differ(iso.spec())  # one model at several budgets is not a model compared with itself
    for cell in iso.cells():
        assert cell["label"].count("@") == 2
        assert cell["steps"] == max(1, round(cell["budget"] / cell["flops_per_token"] / per_step))


def test_an_axis_ladder_groups_by_the_axis_values(research_env, tmp_path):
    job = LadderJob.load(_ladder_yaml(tmp_path, models=["gpt2"], ladder_axis="mlp_type",
                                      ladder_values=["gelu", "swiglu"]))
    children = job.children()
    assert [c.group for c in children[:2]] == ["gelu@2x2x16", "gelu@2x2x24"]
    swiglu = [c for c in children if c.group.startswith("swiglu@")]
    assert len(swiglu) == len(RUNGS) and all(c.cfg.model.mlp_type == "swiglu" for c in swiglu)
    assert swiglu[0].tags["mlproject.ladder.group"] == "swiglu" and swiglu[0].tags["mlproject.ladder.rung"] == "2x2x16"
    assert job.spec().ladder["groups"] == ["gelu", "swiglu"]


def _synthetic_rows(law, seeds=5, held_out=1, noise=0.01, rng=None):
    """Rows of a 6-rung ladder of two groups whose metric follows `law[group](C)` plus seed noise."""
    rng = rng or np.random.default_rng(3)
    rungs = [f"r{i}" for i in range(6)]
    cells, rows = [], []
    for group in law:
        for i, rung in enumerate(rungs):
            compute = 1e9 * 3 ** i
            cells.append({"label": f"{group}@{rung}", "group": group, "rung": rung, "budget": None,
                          "params": 1000 * 2 ** i, "flops_per_token": 1000, "tokens": compute / 1000, "steps": 1})
            for seed in range(seeds):
                rows.append({"group": f"{group}@{rung}", "seed": seed, "status": "FINISHED", "flops": compute,
                             "val_bpb_best": float(law[group](compute) + rng.normal(0, noise))})
    design = {"mode": "tokens", "groups": list(law), "rungs": rungs, "budgets": [], "holdout": held_out,
              "metric": "val_bpb_best", "bootstrap": 1000, "bootstrap_seed": 0, "alpha": 0.05, "axis": None,
              "cells": cells}
    return design, rows


def test_the_aggregate_recovers_known_laws_and_predicts_the_held_out_rung():
    # gpt3's loss at C is gpt2's at 2C: gpt2 needs 2x the compute to reach it
    law = {"gpt2": lambda c: 2.0 + 80.0 * c ** -0.2, "gpt3": lambda c: 2.0 + 80.0 * 2 ** -0.2 * c ** -0.2}
    design, rows = _synthetic_rows(law)
    analysis = analyze_ladder(design, rows)
    for group in law:
        fit = analysis.fits[group]
        assert fit.fit.converged and fit.n_boot == 1000
        assert fit.alpha.low < 0.2 < fit.alpha.high and fit.E.low < 2.0 < fit.E.high
    multiplier = analysis.between["gpt3"]["compute_multiplier"]
    assert multiplier.low < 2.0 < multiplier.high
    assert all(e["inside"] for e in analysis.held_out) and len(analysis.held_out) == 2
    diffs = [e["diff"]["gpt3"] for e in analysis.per_rung]
    assert all(d["mean_diff"] < 0 and d["p_holm"] >= d["p_value"] for d in diffs)
    metrics = ladder_metrics(analysis)
    assert metrics["fit/gpt2/alpha_ci_low"] < metrics["fit/gpt2/alpha"] < metrics["fit/gpt2/alpha_ci_high"]
    assert metrics["heldout/gpt3/r5/inside"] == 1.0
    words = summary_lines(analysis)
    assert words[0].startswith("gpt3 − gpt2 = -") and "at 8.1e+10 FLOPs (rung r4, p_holm = " in words[0]
    assert "gpt2 reaches gpt3's loss with 2.0" in words[1]
    assert words[2].startswith("held-out rung r5 (gpt2): predicted") and words[2].endswith("inside")


def test_a_fit_that_does_not_converge_is_reported_not_raised():
    design, rows = _synthetic_rows({"gpt2": lambda c: 3.0, "gpt3": lambda c: 3.0}, noise=0.0)
    analysis = analyze_ladder(design, rows)
    assert {f.fit.status for f in analysis.fits.values()} == {"alpha_at_bound"}
    assert analysis.between == {} and all("predicted" not in e for e in analysis.held_out)
    assert "fit did not converge: gpt2 alpha_at_bound, gpt3 alpha_at_bound" in summary_lines(analysis)
    assert ladder_metrics(analysis)["fit/gpt2/converged"] == 0.0


def test_iso_flop_profiles_find_the_optimum_size_of_each_budget():
    # L(N, C) = 2 + 0.05 (log N - log N_opt(C))^2 with N_opt = 0.5 C^0.5: the exponent is 0.5
    rng = np.random.default_rng(1)
    budgets, rungs = [1e10, 1e11, 1e12], [f"r{i}" for i in range(5)]
    cells, rows = [], []
    for b in budgets:
        for i, rung in enumerate(rungs):
            params = 0.5 * math.sqrt(b) * 4.0 ** (i - 2)
            label = f"gpt2@{rung}@{b:.3g}"
            cells.append({"label": label, "group": "gpt2", "rung": rung, "budget": b, "params": params,
                          "flops_per_token": 1, "tokens": b, "steps": 1})
            for seed in range(3):
                value = 2 + 0.05 * (math.log(params) - math.log(0.5 * math.sqrt(b))) ** 2 + rng.normal(0, 1e-4)
                rows.append({"group": label, "seed": seed, "status": "FINISHED", "flops": b, "val_bpb_best": value})
    design = {"mode": "iso_flop", "groups": ["gpt2"], "rungs": rungs, "budgets": budgets, "holdout": 0,
              "metric": "val_bpb_best", "bootstrap": 1000, "bootstrap_seed": 0, "alpha": 0.05, "axis": None,
              "cells": cells}
    iso = analyze_ladder(design, rows).iso["gpt2"]
    for profile, b in zip(iso["profiles"], budgets):
        assert profile["n_opt"] == pytest.approx(0.5 * math.sqrt(b), rel=0.02)
    assert iso["exponent"]["estimate"] == pytest.approx(0.5, abs=0.01)
    assert iso["exponent"]["low"] < 0.5 < iso["exponent"]["high"]


@pytest.mark.e2e
def test_plan_only_train_child_and_aggregate_give_the_parent_its_fits_and_plots(research_env, tmp_path, capsys):
    path = _ladder_yaml(tmp_path)
    assert main(["ladder", "--config", str(path), "--plan-only"]) == 0
    plan = parse_step_result(capsys.readouterr().out)
    assert len(plan["children"]) == 2 * len(RUNGS)
    for run_id in plan["children"]:
        assert main(["train", "--child-run-id", run_id]) == 0
    capsys.readouterr()
    assert main(["ladder", "--aggregate", plan["run_id"]]) == 0
    out = capsys.readouterr().out
    assert "scaling ladder:" in out and "held-out rung 2x2x64 (gpt2)" in out
    client = MlflowClient()
    parent = client.get_run(plan["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params["ladder.rungs"] == " ".join(RUNGS)
    statuses = json.loads(parent.data.tags["mlproject.ladder.fit_status"])
    assert set(statuses) == {"gpt2", "gpt3"}
    for group, status in statuses.items():  # a converged fit has its intervals; any other says why
        assert (f"fit/{group}/alpha_ci_low" in parent.data.metrics) == (status == "ok")
        assert parent.data.metrics[f"fit/{group}/converged"] == float(status == "ok")
    files = {f.path for f in client.list_artifacts(plan["run_id"])} | {
        f.path for f in client.list_artifacts(plan["run_id"], "plots")}
    assert {"ladder.json", "results.jsonl", "results.csv", "plots/ladder_val_bpb_best.png",
            "plots/ladder_diff.png"} <= files
    for child in children_of(plan["run_id"]):  # every child logged its training compute
        assert child.data.metrics["flops"] == pytest.approx(
            child.data.metrics["tokens_seen"] * float(child.data.params["runtime.flops_per_token"]))
    assert "Scaling ladder" in parent.data.tags["mlflow.note.content"]

    assert main(["plot", "--kind", "ladder", "--parent-run-id", plan["run_id"],
                 "--output-dir", str(tmp_path / "plots")]) == 0
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"ladder_val_bpb_best.png", "ladder_diff.png",
                                                               "ladder_summary.csv"}


@pytest.mark.e2e
def test_a_killed_ladder_resumes_without_retraining_finished_children(research_env, tmp_path, capsys):
    path = _ladder_yaml(tmp_path, models=["gpt2"], rungs=RUNGS[:4], holdout=0)
    assert main(["ladder", "--config", str(path)]) == 0
    first = parse_step_result(capsys.readouterr().out)
    client = MlflowClient()
    before = {c.data.tags["mlproject.ladder.rung"]: c for c in children_of(first["run_id"])}
    client.update_run(first["run_id"], status="RUNNING")  # its process was killed mid-ladder
    client.set_terminated(before["2x2x32"].info.run_id, "KILLED")
    client.delete_run(before["2x2x48"].info.run_id)

    assert main(["ladder", "--config", str(path), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "2 finished, 1 to resume, 1 new" in out
    after = {c.data.tags["mlproject.ladder.rung"]: c for c in children_of(first["run_id"])}
    assert {c.info.status for c in after.values()} == {"FINISHED"}
    for rung in ("2x2x16", "2x2x24"):  # untouched
        assert after[rung].info.end_time == before[rung].info.end_time
    assert after["2x2x32"].info.run_id == before["2x2x32"].info.run_id  # continued in the same run
    assert after["2x2x48"].info.run_id != before["2x2x48"].info.run_id
