"""A sweep store written by an earlier release still resumes: the same parent and children are
used, and the plan reads and writes back in the format that release stored.

The store (tests/fixtures/sweep_store/store.tar.gz) is a `compare --plan-only` of
`compare.yaml` written by a release; `make_store.py` beside it says how, and which release.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import use_store
from mlproject.cli import main
from mlproject.protocol import parse_step_result

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sweep_store"
WRITTEN_AT = "/tmp/mlproject-sweep-store-fixture"  # make_store.py's ROOT: the artifact locations start with it


@pytest.fixture
def old_store(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """The release's store unpacked in this test's folder, its artifact locations moved along;
    yields the plan stage's result line as that release printed it."""
    import mlflow

    root = tmp_path / "store"
    with tarfile.open(FIXTURE / "store.tar.gz") as tar:
        tar.extractall(root, filter="data")
    with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db, db:
        db.execute("update experiments set artifact_location = replace(artifact_location, ?, ?)",
                   (WRITTEN_AT, str(root)))
        db.execute("update runs set artifact_uri = replace(artifact_uri, ?, ?)", (WRITTEN_AT, str(root)))
    use_store(monkeypatch, f"sqlite:///{root}/mlflow.db", cache_dir, tmp_path)
    yield json.loads((FIXTURE / "result.json").read_text(encoding="utf-8"))
    mlflow.set_tracking_uri(None)


def _runs(experiment_id: str) -> dict[str, str]:
    """{run id: status} of every run in the experiment."""
    return {r.info.run_id: r.info.status for r in MlflowClient().search_runs([experiment_id])}


def test_the_stored_plan_of_an_earlier_release_loads_and_writes_back_unchanged(old_store):
    from mlproject.research.sweep import PlannedChild, load_plan

    plan = load_plan(old_store["run_id"])
    assert plan.children == [PlannedChild(old_store["children"][0], "gpt2-s1", "gpt2", 1, "new"),
                             PlannedChild(old_store["children"][1], "gpt3-s1", "gpt3", 1, "new")]
    assert plan.to_json() == (FIXTURE / "sweep.json").read_text(encoding="utf-8")  # same keys, same order


@pytest.mark.e2e
def test_an_earlier_release_s_planned_sweep_resumes_in_its_own_parent_and_children(old_store, capsys):
    parent, children = old_store["run_id"], old_store["children"]
    before = _runs(old_store["experiment_id"])
    assert before == {parent: "RUNNING", children[0]: "SCHEDULED", children[1]: "SCHEDULED"}

    assert main(["train", "--child-run-id", children[0]]) == 0  # a mapped task: the child's stored config
    assert main(["compare", "--config", str(FIXTURE / "compare.yaml"), "--resume"]) == 0
    resumed = parse_step_result(capsys.readouterr().out)
    assert resumed["run_id"] == parent and resumed["finished"] == 2
    assert _runs(old_store["experiment_id"]) == dict.fromkeys([parent, *children], "FINISHED")  # no new run

    assert main(["compare", "--aggregate", parent]) == 0
    assert parse_step_result(capsys.readouterr().out)["run_id"] == parent
    assert set(_runs(old_store["experiment_id"])) == set(before)
