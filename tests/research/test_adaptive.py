"""`--adaptive-seeds MAX`: the looks as a pure function of the finished children, a compare that
stops early on a large effect, an ablation that runs to MAX on a null one, a resume after the
parent was interrupted between looks, and bad input refused before any run exists."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from mlflow import MlflowClient

from helpers import children_of, unique, write_sweep
from mlproject.cli import main
from mlproject.research.ablation import AblationJob, run_ablation
from mlproject.research.adaptive import (adaptive_design, decide, next_seed_count, paired_diffs, seed_schedule,
                                         verdict_tag)
from mlproject.research.compare import CompareJob, run_compare

VERDICT = "mlproject.adaptive.verdict"
Z = "val_loss_best/gpt3-gpt2/sequential_z"


def _row(group: str, seed: int, loss: float | None, status: str = "FINISHED") -> dict:
    return {"group": group, "seed": seed, "status": status, "val_loss_best": loss}


# ----------------------------------------------------------------------------- pure decisions

def test_added_seeds_follow_the_largest_starting_seed():
    assert seed_schedule([42, 7], 5) == [42, 7, 43, 44, 45]
    assert seed_schedule([1, 2], 2) == [1, 2]


def test_paired_differences_stop_at_the_first_seed_whose_pair_has_not_finished():
    rows = [_row("a", 1, 3.0), _row("b", 1, 2.0), _row("a", 2, 3.0), _row("b", 2, 2.5, "FAILED"),
            _row("a", 3, 3.0), _row("b", 3, 1.0)]
    assert paired_diffs(rows, ["a", "b"], "val_loss_best", [1, 2, 3]) == {"b": [-1.0]}


def test_a_large_consistent_effect_is_decided_at_the_first_look_whose_boundary_it_crosses():
    plan = adaptive_design(2, 4, 0.05, candidates=1)
    assert plan.seeds == (2, 3, 4)
    state = decide({"gpt3": [-1.0, -1.02, -0.98]}, plan, "minimize")["gpt3"]
    assert [look.decision for look in state.looks] == ["continue", "better"]
    assert abs(state.looks[0].z) < state.looks[0].boundary <= 4 and abs(state.looks[1].z) >= state.looks[1].boundary
    assert state.verdict == "better" and next_seed_count({"gpt3": state}) is None
    # seeds added after the decision (for another candidate, or by a resumed sweep) change nothing
    assert decide({"gpt3": [-1.0, -1.02, -0.98, 5.0]}, plan, "minimize")["gpt3"] == state
    # the metric's direction decides what "better" is
    assert decide({"acc": [-1.0, -1.02, -0.98]}, plan, "maximize")["acc"].verdict == "worse"


def test_a_null_effect_runs_to_max_and_an_unfinished_look_asks_for_its_seeds():
    plan = adaptive_design(2, 4, 0.05, candidates=1)
    partial = decide({"b": [0.1, -0.1]}, plan, "minimize")
    assert partial["b"].verdict is None and next_seed_count(partial) == 3
    done = decide({"b": [0.1, -0.1, 0.05, -0.05]}, plan, "minimize")["b"]
    assert len(done.looks) == 3 and done.verdict == "no difference detectable with 4 seeds"


def test_several_candidates_split_alpha_and_continue_until_each_is_decided():
    one, two = adaptive_design(2, 4, 0.05, 1), adaptive_design(2, 4, 0.05, 2)
    assert two.alpha == pytest.approx(0.025) and all(b2 > b1 for b1, b2 in zip(one.boundaries, two.boundaries))
    states = decide({"x": [-1.0, -1.0], "y": [0.2, -0.1]}, two, "minimize")
    assert states["x"].verdict == "better" and states["y"].verdict is None and next_seed_count(states) == 3
    assert verdict_tag({"x": "better", "y": "worse"}) == "x: better; y: worse"
    assert verdict_tag({"x": "better"}) == "better"


# ----------------------------------------------------------------------------- sweeps

def _lopsided(path, experiment: str) -> CompareJob:
    """gpt2 (the baseline) with a learning rate 100x too small against gpt3: gpt3 wins by a mile."""
    write_sweep(path, experiment, extra={
        "compare": {"models": ["gpt2", "gpt3"], "seeds": [1, 2], "adaptive_seeds": 4},
        "per_model": {"gpt2": {"train": {"learning_rate": 1e-5}}, "gpt3": {"train": {"learning_rate": 1e-3}}}})
    return CompareJob.load(path)


def _quiet(fn, *args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn(*args)
    return result, out.getvalue()


def _seeds(parent_run_id: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for child in children_of(parent_run_id):
        assert child.info.status == "FINISHED"
        out.setdefault(child.data.tags["mlproject.group"], []).append(int(child.data.tags["mlproject.seed"]))
    return {group: sorted(seeds) for group, seeds in out.items()}


def _looks(parent_run_id: str, key: str) -> list[tuple[int, float]]:
    """(look, value): every round logs the looks so far again, with the same values."""
    from mlproject.tracking.queries import metric_history

    return metric_history(parent_run_id, key)


@pytest.fixture(scope="module")
def resumed_compare(session_env):
    """The lopsided adaptive compare (start 2 seeds, MAX 4), interrupted after its first look and
    resumed with --resume: (the first round's child run ids, outcome, output of the resume)."""
    from mlproject.research import adaptive

    experiment = unique("adaptive-big")
    job = _lopsided(session_env / f"{experiment}.yaml", experiment)

    def interrupted(parent_run_id: str) -> None:
        raise KeyboardInterrupt(f"killed after the first look of {parent_run_id}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(adaptive, "_continued_parent", interrupted)
        with pytest.raises(KeyboardInterrupt, match="killed after the first look") as killed:
            _quiet(run_compare, job)
    parent_run_id = killed.value.args[0].rsplit(" ", 1)[-1]
    first_round = {c.info.run_id for c in children_of(parent_run_id)}
    parent = MlflowClient().get_run(parent_run_id)
    assert parent.info.status == "KILLED" and VERDICT not in parent.data.tags
    resumed = CompareJob.load(session_env / f"{experiment}.yaml")
    resumed.compare.resume = True
    outcome, out = _quiet(run_compare, resumed)
    assert outcome.parent_run_id == parent_run_id
    return first_round, outcome, out


@pytest.mark.e2e  # whole adaptive sweeps, rounds of training
def test_an_adaptive_compare_stops_early_on_a_large_effect(resumed_compare):
    _, outcome, out = resumed_compare
    seeds = _seeds(outcome.parent_run_id)
    assert seeds["gpt2"] == seeds["gpt3"] and len(seeds["gpt2"]) < 4  # stopped before MAX
    parent = MlflowClient().get_run(outcome.parent_run_id)
    assert parent.data.tags[VERDICT] == "better" and parent.info.status == "FINISHED"
    decisions = _looks(outcome.parent_run_id, "val_loss_best/gpt3-gpt2/sequential_decision")
    assert decisions[-1] == (len(decisions), 1.0) and all(v == 0.0 for _, v in decisions[:-1])
    design = json.loads(parent.data.tags["mlproject.adaptive.design"])
    assert design["seeds"] == [2, 3, 4] and len(seeds["gpt2"]) == design["seeds"][len(decisions) - 1]
    assert "adaptive seeds: gpt3 vs gpt2 (val_loss_best): better at look" in out
    assert "adaptive seeds: gpt3 vs gpt2" in parent.data.tags["mlflow.note.content"]


@pytest.mark.e2e  # whole adaptive sweeps, rounds of training
def test_an_adaptive_compare_interrupted_between_looks_resumes_at_its_last_look(resumed_compare):
    first_round, outcome, out = resumed_compare
    assert len(first_round) == 4
    children = {c.info.run_id for c in children_of(outcome.parent_run_id)}
    assert first_round < children  # the first round's children were kept, the next look's added
    assert "compare: 4 child runs (4 finished)" in out  # the first look was recomputed, not retrained


@pytest.mark.e2e  # whole adaptive sweeps, rounds of training
def test_an_adaptive_ablation_of_a_null_effect_runs_to_max(research_env, tmp_path):
    # activation checkpointing recomputes the same function: the paired differences are noise (or 0)
    path = write_sweep(tmp_path / "null.yaml", unique("adaptive-null"), extra={
        "ablation": {"ablation_axis": "gradient_checkpointing", "ablation_values": ["false", "true"],
                     "seeds": [5, 6], "adaptive_seeds": 4}})
    outcome, out = _quiet(run_ablation, AblationJob.load(path))
    assert _seeds(outcome.parent_run_id) == {"false": [5, 6, 7, 8], "true": [5, 6, 7, 8]}
    tags = MlflowClient().get_run(outcome.parent_run_id).data.tags
    assert tags[VERDICT] == "no difference detectable with 4 seeds"
    steps = [s for s, _ in _looks(outcome.parent_run_id, "val_loss_best/true-false/sequential_n")]
    assert steps == [1, 2, 3]
    assert "no difference detectable with 4 seeds at look 3 of 3" in out


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("argv, message", [
    (["--seeds", "1", "2", "3", "--adaptive-seeds", "2"],
     "compare: adaptive_seeds=2 is below the starting seed count 3 (seeds=[1, 2, 3]); expected at least 3"),
    (["--seeds", "1", "--adaptive-seeds", "4"], "compare: adaptive_seeds=4 needs at least 2 starting seeds"),
    (["--models", "gpt2", "--seeds", "1", "2", "--adaptive-seeds", "4"],
     "compare: adaptive_seeds needs a baseline and at least one candidate, got groups ['gpt2']"),
    (["--seeds", "1", "2", "--adaptive-seeds", "4", "--plan-only", "true"],
     "--plan-only plans a fixed set of seeds, but adaptive_seeds=4 adds seeds in rounds"),
])
def test_bad_adaptive_input_is_one_line_before_any_run_exists(research_env, tmp_path, capsys, argv, message):
    experiment = unique("adaptive-bad")
    path = write_sweep(tmp_path / "bad.yaml", experiment)
    assert main(["compare", "--config", str(path), *argv]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert MlflowClient().get_experiment_by_name(experiment) is None or not MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name(experiment).experiment_id])
