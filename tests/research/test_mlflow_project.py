"""End to end: `mlflow run . -e <entry point> --env-manager local` on the offline corpus."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import ViewType
import pytest

from mlproject.protocol import parse_step_result
from helpers import REPO, VENV_BIN, children_of, deleted_soon, unique, write_sweep, write_tiny

# End-to-end (make test-all): `mlflow run` of an entry point, in a subprocess.
pytestmark = pytest.mark.e2e


def test_mlflow_run_compare_makes_the_mlflow_run_the_parent(research_env, tmp_path):
    experiment = unique("mlflow-run")
    config = write_sweep(tmp_path / "compare.yaml", experiment)
    done = subprocess.run(
        [str(VENV_BIN / "mlflow"), "run", str(REPO), "-e", "compare", "--env-manager", "local",
         "--experiment-name", experiment, "-P", f"config={config}", "-P", "models=gpt2", "-P", "seeds=1 2"],
        capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = parse_step_result(done.stdout)
    assert result["step"] == "compare" and result["status"] == "FINISHED"
    parent = MlflowClient().get_run(result["run_id"])
    assert parent.data.tags["mlflow.project.entryPoint"] == "compare"  # created by `mlflow run`
    assert parent.data.tags["mlproject.role"] == "sweep_parent"
    children = children_of(parent.info.run_id)
    assert sorted(c.data.tags["mlproject.seed"] for c in children) == ["1", "2"]
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.params["model.model_version"] for c in children} == {"gpt2"}


def _mlflow_run(entry_point: str, *args: str, local_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"MLPROJECT_LOCAL_DIR": str(local_dir)} if local_dir else {})}  # not into the checkout
    return subprocess.run([str(VENV_BIN / "mlflow"), "run", str(REPO), "-e", entry_point, "--env-manager", "local",
                           *args], capture_output=True, text=True, env=env, timeout=300)


def test_mlflow_run_train_without_experiment_name_lands_in_the_configs_experiment(research_env, tmp_path):
    experiment = unique("entry-train")
    config = write_tiny(tmp_path / "train.yaml", experiment)
    done = _mlflow_run("train", "-P", f"config={config}", "-P", "max_steps=2", local_dir=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = parse_step_result(done.stdout)
    client = MlflowClient()
    run = client.get_run(result["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == experiment  # as `mlproject train --config`
    assert run.info.status == "FINISHED" and run.data.metrics["val_loss_best"] > 0
    # `mlflow run`'s own run, in Default, holds a link to the real one and is deleted once it ends
    (outer,) = client.search_runs(["0"], f"tags.`mlproject.step_run` = '{run.info.run_id}'", run_view_type=ViewType.ALL)
    assert outer.data.tags["mlflow.project.entryPoint"] == "train"
    assert f"run {outer.info.run_id} that `mlflow run` made is deleted" in done.stderr
    assert deleted_soon(outer.info.run_id).info.status == "FINISHED"


def test_mlflow_run_evaluate_without_a_run_id_leaves_no_failed_run(research_env):
    experiment = unique("entry-bad")
    done = _mlflow_run("evaluate", "--experiment-name", experiment)
    assert done.returncode != 0
    assert "mlproject: error: evaluate: give exactly one of --run-id" in done.stderr
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (outer,) = client.search_runs([experiment_id], run_view_type=ViewType.ALL)
    # deleted, not left FAILED and empty; already when `mlflow run`'s output ended (its reader waited)
    assert (outer.info.lifecycle_stage, outer.info.status) == ("deleted", "FAILED")


def _without_output_dir(path: Path) -> Path:
    """The config at `path` with no tracking.output_dir: the suite's default places decide."""
    import yaml

    data = yaml.safe_load(path.read_text())
    data["tracking"].pop("output_dir")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_clean_clone_stays_clean_after_mlflow_run_train_a_compare_and_mlflow_run_plot_inside_it(research_env, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k != "MLPROJECT_LOCAL_DIR"}
    train = _without_output_dir(write_tiny(tmp_path / "train.yaml", unique("clean-train")))
    done = subprocess.run([str(VENV_BIN / "mlflow"), "run", ".", "-e", "train", "--env-manager", "local",
                           "-P", f"config={train}", "-P", "max_steps=2"],
                          cwd=clone, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert parse_step_result(done.stdout)["status"] == "FINISHED"
    sweep = _without_output_dir(write_sweep(tmp_path / "compare.yaml", unique("clean-compare")))
    done = subprocess.run([str(VENV_BIN / "mlproject"), "compare", "--config", str(sweep), "--models", "gpt2",
                           "--seeds", "1"], cwd=clone, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    parent = parse_step_result(done.stdout)
    assert parent["status"] == "FINISHED"
    done = subprocess.run([str(VENV_BIN / "mlflow"), "run", ".", "-e", "plot", "--env-manager", "local",
                           "-P", f"parent_run_id={parent['run_id']}"],
                          cwd=clone, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert parse_step_result(done.stdout)["plots"][0].startswith(f"runs:/{parent['run_id']}/plots/")  # logged only
    # ignored files count too: runs/, checkpoints/, research_runs/ are in .gitignore
    status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=clone, capture_output=True,
                            text=True, check=True).stdout
    assert status == "", status
