"""End to end: `mlflow run . -e compare --env-manager local` on the offline corpus."""

from __future__ import annotations

import os
import subprocess

from mlflow import MlflowClient
import pytest

from mlproject.protocol import parse_step_result
from helpers import REPO, VENV_BIN, children_of, unique, write_sweep

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
