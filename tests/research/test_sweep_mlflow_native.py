"""A compare as the MLflow UI and client see it: parent params, names, descriptions, tags, times,
and the best child's model registered and servable (a make-run-sized sweep: 2 models x 2 seeds,
2 children at a time)."""

from __future__ import annotations

import contextlib
import io
import json
import os

import mlflow
import pytest
from mlflow import MlflowClient

from helpers import children_of, unique, write_sweep
from mlproject.research.compare import CompareJob, run_compare

# End-to-end (make test-all): a make-run-sized compare, trained once for the module.
pytestmark = pytest.mark.e2e

SEEDS = (1, 2)


@pytest.fixture(scope="module")
def registered_sweep(session_env):
    """(outcome, printed output, registered model name) of a parallel compare with register_best."""
    name = unique("best")
    path = write_sweep(session_env / "compare-best.yaml", unique("compare-best"), model={"attention_window": 8},
                       extra={"compare": {"models": ["gpt2", "gpt3"], "seeds": list(SEEDS), "parallel": 2,
                                          "register_best": name, "register_best_ungated": True}})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        outcome = run_compare(CompareJob.load(path))
    return outcome, out.getvalue(), name


def test_a_make_run_sized_compare_registers_its_best_model(registered_sweep, monkeypatch):
    outcome, out, name = registered_sweep
    client = MlflowClient()
    version = client.get_model_version_by_alias(name, "best")
    children = children_of(outcome.parent_run_id)
    best = min(children, key=lambda c: c.data.metrics["val_loss_best"])
    assert version.run_id == best.info.run_id
    assert client.get_run(outcome.parent_run_id).data.tags["mlproject.best_run_id"] == best.info.run_id
    result = json.loads(out.strip().splitlines()[-1].split(" ", 1)[1])
    assert result["model_uri"] == f"models:/{name}@best"
    assert result["registered_model_uri"] == f"models:/{name}/{version.version}"
    assert f"predict: python -c \"import mlflow; print(mlflow.pyfunc.load_model('models:/{name}@best')" in out

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    texts = mlflow.pyfunc.load_model(f"models:/{name}@best").predict(["The", "def"], params={"max_new_tokens": 4})
    assert len(texts) == 2 and texts[0].startswith("The") and texts[1].startswith("def")


def test_logging_the_best_model_keeps_the_child_run_finished_with_its_training_times(registered_sweep):
    outcome, _, name = registered_sweep
    version = MlflowClient().get_model_version_by_alias(name, "best")
    run = MlflowClient().get_run(version.run_id)
    assert run.info.status == "FINISHED"
    history = MlflowClient().get_metric_history(run.info.run_id, "train_loss")
    assert run.info.end_time >= max(m.timestamp for m in history)
    assert run.info.end_time < MlflowClient().get_run(outcome.parent_run_id).info.end_time


def test_the_parents_params_hold_no_child_only_values(registered_sweep):
    outcome, _, _ = registered_sweep
    client = MlflowClient()
    params = client.get_run(outcome.parent_run_id).data.params
    children = children_of(outcome.parent_run_id)
    for key in ("train.seed", "train.data_seed", "model.model_version", "model.vocab_size"):
        assert key not in params
    assert params["compare.models"] == "gpt2 gpt3" and params["compare.seeds"] == "1 2"
    assert params["model.n_layer"] == "2" and params["train.recipe"] == "gpt2"
    shared = {k: v for k, v in params.items() if k.split(".")[0] in ("model", "data", "train")}
    assert shared, "the parent lists the params its children share"
    for child in children:
        assert {k: child.data.params[k] for k in shared} == shared
    experiment_id = client.get_run(outcome.parent_run_id).info.experiment_id
    found = client.search_runs([experiment_id], "params.`model.model_version` = 'gpt2' and params.`train.seed` = '1'")
    assert [r.info.run_id for r in found] == [c.info.run_id for c in children
                                              if c.data.params["model.model_version"] == "gpt2"
                                              and c.data.params["train.seed"] == "1"]


def test_the_parent_has_its_name_and_a_markdown_summary_as_description(registered_sweep):
    outcome, _, name = registered_sweep
    parent = MlflowClient().get_run(outcome.parent_run_id)
    assert parent.info.run_name == "compare-gpt2-vs-gpt3"
    note = parent.data.tags["mlflow.note.content"]
    assert "| group&emsp; | n&emsp; | mean ± sd&emsp; |" in note and "| gpt3&emsp; | 2&emsp; |" in note
    assert f"models:/{name}@best" in note


def test_every_sweep_run_has_mlflow_source_and_user_tags(registered_sweep):
    outcome, _, _ = registered_sweep
    for run in [MlflowClient().get_run(outcome.parent_run_id), *children_of(outcome.parent_run_id)]:
        tags = run.data.tags
        assert tags["mlflow.user"] and tags["mlflow.source.name"] and tags["mlflow.source.type"] == "LOCAL"
        assert len(tags["mlflow.source.git.commit"]) == 40


def test_a_queued_child_starts_when_its_training_starts(registered_sweep):
    """Two at a time: the last two children were queued behind the first two, so each started
    after one of the first two ended."""
    outcome, _, _ = registered_sweep
    children = sorted(children_of(outcome.parent_run_id), key=lambda r: r.info.start_time)
    first_end = min(c.info.end_time for c in children[:2])
    assert all(c.info.start_time >= first_end for c in children[2:])


def test_publishing_the_same_best_model_again_adds_no_version(registered_sweep):
    """A resumed sweep whose best child did not change keeps the registered version."""
    from mlproject.tracking.best_model import publish_best

    outcome, _, name = registered_sweep
    client = MlflowClient()
    before = client.get_model_version_by_alias(name, "best")
    again = publish_best(outcome.parent_run_id, before.run_id, name, metric="val_loss_best", value=1.0)
    assert again.registered_uri == f"models:/{name}/{before.version}"
    assert len(client.search_model_versions(f"name='{name}'")) == 1
