"""`mlproject reproduce`: a recorded run re-made into a new run, its record checked against this
machine, every metric history judged, the exit code gating on `differs` (real SQLite stores)."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from helpers import write_tiny

# End-to-end (make test-all): each test trains a run (or a sweep) and re-trains it.
pytestmark = pytest.mark.e2e


def _train(tmp_path: Path, experiment: str, name: str = "orig", **runtime: object) -> str:
    from mlproject.app.config import RunConfig
    from mlproject.tracking.train_tracker import train_tracked

    path = write_tiny(tmp_path / f"{name}.yaml", experiment, train={"max_steps": 8}, runtime=runtime,
                      tracking={"run_name": name, "log_model": False, "system_metrics": False})
    return train_tracked(RunConfig.load(path)).run_id


def _reproduce(capsys: pytest.CaptureFixture, *flags: str) -> tuple[int, str]:
    from mlproject.cli import main

    capsys.readouterr()
    code = main(["reproduce", *flags])
    out = capsys.readouterr()
    return code, out.out + out.err


def _reproduction_of(run_id: str):
    from mlflow import MlflowClient

    run = MlflowClient().get_run(run_id)
    found = MlflowClient().search_runs([run.info.experiment_id], f"tags.`mlproject.reproduces` = '{run_id}'")
    assert len(found) == 1
    return found[0]


def test_a_tiny_cpu_run_logs_its_record_and_reproduces_identical(research_env, experiment_name, tmp_path, capsys):
    from mlflow import MlflowClient

    run_id = _train(tmp_path, experiment_name)
    original = MlflowClient().get_run(run_id)
    assert original.data.tags["mlproject.record"] == "1"
    assert len(original.data.tags["mlproject.data.digest"]) == 12
    logged = {a.path for folder in ("source", "environment") for a in MlflowClient().list_artifacts(run_id, folder)}
    assert {"source/source.json", "environment/environment.json", "environment/requirements.txt"} <= logged

    code, out = _reproduce(capsys, "--run-id", run_id)

    assert code == 0, out
    assert "verdict: identical" in out
    assert "val_loss: identical (bitwise, 2 steps)" in out
    assert "train_loss: identical (bitwise, 4 steps)" in out
    new = _reproduction_of(run_id)
    assert new.info.status == "FINISHED"
    assert new.data.tags["mlproject.reproduce.verdict"] == "identical"
    assert run_id in new.data.tags["mlflow.note.content"]
    assert new.info.run_id in MlflowClient().get_run(run_id).data.tags["mlflow.note.content"]
    assert {a.path for a in MlflowClient().list_artifacts(new.info.run_id, "reproduce")} == {
        "reproduce/report.txt", "reproduce/overlay.png"}


def test_max_steps_re_makes_the_first_steps_exactly_with_the_full_schedule(research_env, experiment_name, tmp_path,
                                                                           capsys):
    from mlflow import MlflowClient

    run_id = _train(tmp_path, experiment_name)  # 8 steps: train_loss every 2, val_loss every 4

    code, out = _reproduce(capsys, "--run-id", run_id, "--max-steps", "4")

    assert code == 0, out
    assert "verdict: identical" in out
    assert "train_loss: identical (bitwise, 2 steps)" in out and "val_loss: identical (bitwise, 1 steps)" in out
    new = _reproduction_of(run_id)
    assert new.info.status == "FINISHED"
    steps = [m.step for m in MlflowClient().get_metric_history(new.info.run_id, "train_loss")]
    assert max(steps) == 4  # it stopped there; the same losses prove the schedule is the 8-step one
    assert new.data.params["train.stop_at_step"] == "4" and new.data.params["train.max_steps"] == "8"


def test_a_changed_token_cache_is_refused_unless_allowed(research_env, experiment_name, tmp_path, capsys):
    from mlflow import MlflowClient

    run_id = _train(tmp_path, experiment_name)
    MlflowClient().set_tag(run_id, "mlproject.data.digest", "0123456789ab")  # the cache it trained on is gone

    code, out = _reproduce(capsys, "--run-id", run_id)

    assert code == 2
    assert "data digest: recorded 0123456789ab, current" in out and "--allow-data-change" in out
    experiment = MlflowClient().get_run(run_id).info.experiment_id
    assert not MlflowClient().search_runs([experiment], f"tags.`mlproject.reproduces` = '{run_id}'")


def test_a_run_without_record_or_config_reproduces_from_its_params_and_lists_the_unchecked(
        research_env, experiment_name, tmp_path, capsys):
    from mlflow import MlflowClient

    run_id = _train(tmp_path, experiment_name)
    client = MlflowClient()
    for tag in ("mlproject.record", "mlproject.record.patch", "mlproject.data.digest",
                "mlproject.data.tokenizer_hash"):
        client.delete_tag(run_id, tag)
    artifacts = Path(unquote(urlparse(client.get_run(run_id).info.artifact_uri).path))
    for folder in ("source", "environment", "config"):  # as a run of an older store has them
        shutil.rmtree(artifacts / folder)

    code, out = _reproduce(capsys, "--run-id", run_id)

    assert code == 0, out
    assert "config from params" in out
    assert "verdict: identical" in out
    assert "not checked: commit (the run has no source record)" in out
    assert "not checked: packages (the run has no environment record)" in out
    assert "not checked: data digest" not in out  # the dataset.digest param still checks the data


def test_another_thread_count_gets_the_verdict_its_numbers_give_never_a_false_identical(
        research_env, experiment_name, tmp_path, capsys):
    import struct

    from mlflow import MlflowClient

    run_id = _train(tmp_path, experiment_name, num_threads=1)

    code, out = _reproduce(capsys, "--run-id", run_id, "--num-threads", "2")

    new = _reproduction_of(run_id)
    assert new.data.params["train.num_threads"] == "2"
    # The verdict checked against the numbers themselves: identical only if every value is equal bit
    # for bit; else within tolerance (exit 0) or differs (exit 1) as the largest relative difference says.
    worst, bitwise = 0.0, True
    for metric in ("train_loss", "val_loss"):
        a = [m.value for m in sorted(MlflowClient().get_metric_history(run_id, metric), key=lambda m: m.step)]
        b = [m.value for m in sorted(MlflowClient().get_metric_history(new.info.run_id, metric), key=lambda m: m.step)]
        assert len(a) == len(b)
        bitwise &= all(struct.pack("<d", x) == struct.pack("<d", y) for x, y in zip(a, b))
        worst = max([worst] + [abs(x - y) / max(abs(x), abs(y)) for x, y in zip(a, b)])
    verdict = new.data.tags["mlproject.reproduce.verdict"]
    if bitwise:
        assert verdict == "identical" and code == 0
    elif worst <= 1e-4:
        assert verdict == "within tolerance" and code == 0
    else:
        assert verdict == "differs" and code == 1, out


def test_a_metric_that_did_not_come_back_differs_and_exits_non_zero(research_env, experiment_name, tmp_path, capsys):
    from mlflow import MlflowClient

    run_id = _train(tmp_path, experiment_name)
    history = MlflowClient().get_metric_history(run_id, "train_loss")
    last = max(history, key=lambda m: m.step)
    MlflowClient().log_metric(run_id, "train_loss", last.value + 0.5, step=last.step)  # a forced change

    code, out = _reproduce(capsys, "--run-id", run_id)

    assert code == 1
    assert "verdict: differs" in out
    assert f"train_loss: differs from step {last.step}" in out
    assert _reproduction_of(run_id).data.tags["mlproject.reproduce.verdict"] == "differs"



def test_a_sweep_parent_reproduces_with_a_tost_verdict_on_its_group_means(compare_sweep, research_env, capsys):
    from mlflow import MlflowClient

    from helpers import children_of

    outcome, _ = compare_sweep
    parent = outcome.parent_run_id
    assert MlflowClient().get_run(parent).data.tags["mlproject.record"] == "1"  # the parent has its record too

    code, out = _reproduce(capsys, "--run-id", parent, "--margin", "0.01")

    assert code == 0, out
    assert f"reproduce: sweep {parent} -> run" in out
    assert "gpt2: reproduced (equivalent within ±0.01, p < 0.001)" in out
    assert "gpt3: reproduced (equivalent within ±0.01, p < 0.001)" in out
    new = _reproduction_of(parent)
    assert new.data.tags["mlproject.reproduce.verdict"] == "reproduced"
    reproductions = children_of(new.info.run_id)
    originals = {c.info.run_id for c in children_of(parent)}
    assert len(reproductions) == len(originals) == 4
    assert {r.data.tags["mlproject.reproduces"] for r in reproductions} == originals
    assert all(r.data.tags["mlproject.reproduce.verdict"] == "identical" for r in reproductions)
    assert MlflowClient().get_run(parent).data.tags["mlproject.reproduced_by"] == new.info.run_id

    seeds = sorted({int(c.data.tags["mlproject.seed"]) for c in children_of(parent)})
    code, out = _reproduce(capsys, "--run-id", parent, "--seeds", str(seeds[0]), "999")
    assert code == 2 and f"seeds [999] are not seeds of sweep {parent}; expected some of {seeds}" in out
    code, out = _reproduce(capsys, "--run-id", parent, "--max-steps", "2")
    assert code == 2 and "--max-steps applies to a training run" in out

    code, out = _reproduce(capsys, "--run-id", parent, "--seeds", str(seeds[0]), "--margin", "0.01")
    assert code == 1, out  # one seed per group cannot show equivalence: said, and gated on
    latest = MlflowClient().search_runs([new.info.experiment_id], f"tags.`mlproject.reproduces` = '{parent}'",
                                        order_by=["attributes.start_time DESC"])[0]
    again = children_of(latest.info.run_id)
    first_seed = {c.info.run_id for c in children_of(parent) if c.data.tags["mlproject.seed"] == str(seeds[0])}
    assert len(again) == 2 and {r.data.tags["mlproject.reproduces"] for r in again} == first_seed


COSINE = "    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))"


def _git(repo: Path, *args: str) -> None:
    import subprocess

    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
                   check=True, capture_output=True)


def _mlproject(repo: Path, *args: str) -> "subprocess.CompletedProcess[str]":
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    return subprocess.run([sys.executable, "-m", "mlproject", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def test_source_record_re_creates_a_dirty_tree_after_it_moved_on(research_env, experiment_name, tmp_path):
    """The run is made from a copy of the package in a git repository of its own, with an
    uncommitted change that alters the numbers (half the cosine learning rate); the tree then
    moves on (change reverted, a new commit). Only the recorded source brings the numbers back.
    Three processes (train, reproduce twice) and four tiny trainings: a minute or more."""
    from mlflow import MlflowClient

    from helpers import REPO

    repo = tmp_path / "repo"
    shutil.copytree(REPO / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    optim = repo / "src" / "mlproject" / "training" / "optim.py"
    optim.write_text(optim.read_text().replace(COSINE, COSINE.replace("return ", "return 0.5 * (") + ")"))
    config = write_tiny(tmp_path / "dirty.yaml", experiment_name, train={"max_steps": 8},
                        tracking={"run_name": "dirty", "log_model": False, "system_metrics": False})
    assert _mlproject(repo, "train", "--config", str(config)).returncode == 0
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name(experiment_name).experiment_id])
    assert run.data.tags["mlproject.record.patch"] == "logged"
    patch = Path(client.download_artifacts(run.info.run_id, "source/patch.diff", str(tmp_path)))
    assert "+    return 0.5 * (min_lr_ratio" in patch.read_text()

    _git(repo, "checkout", "--", ".")  # the tree moves on: the change reverted, another commit on top
    (repo / "NOTES.txt").write_text("later work\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "later")

    recorded = _mlproject(repo, "reproduce", "--run-id", run.info.run_id, "--source", "record")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert "verdict: identical" in recorded.stdout
    assert "commit: recorded" in recorded.stdout  # the installed tree's commit moved on, and it says so
    installed = _mlproject(repo, "reproduce", "--run-id", run.info.run_id)
    assert installed.returncode == 1, installed.stdout + installed.stderr
    assert "verdict: differs" in installed.stdout
