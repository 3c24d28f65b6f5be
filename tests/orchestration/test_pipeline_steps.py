"""A step's command, shared by the local runner and the DAG: `mlflow run` of the entry point,
upstream results substituted, resume for sweeps; and the result line a step reports back."""

from __future__ import annotations

import pytest

from mlproject.errors import MlprojectError
from mlproject.orchestration.config import PipelineStep
from mlproject.orchestration.steps import step_command
from mlproject.protocol import parse_step_result


def test_step_command_is_an_mlflow_run_of_the_entry_point():
    step = PipelineStep(id="plot", entry_point="plot", parameters={"seeds": [1, 2], "fair_recipe": False,
                                                                   "parent_run_id": "{{ steps.cmp.run_id }}"},
                        experiment_name="exp")
    assert step_command(step, "/proj", {"cmp": {"run_id": "abc"}}) == [
        "mlflow", "run", "/proj", "-e", "plot", "--env-manager", "local", "--experiment-name", "exp",
        "-P", "seeds=1 2", "-P", "fair_recipe=false", "-P", "parent_run_id=abc"]


def test_step_command_adds_resume_only_to_sweep_steps():
    assert "resume=true" in step_command(PipelineStep(id="c", entry_point="compare"), resume=True)
    assert "resume=true" not in step_command(PipelineStep(id="p", entry_point="plot"), resume=True)


def test_step_command_without_the_upstream_result_is_an_error():
    step = PipelineStep(id="plot", entry_point="plot", parameters={"parent_run_id": "{{ steps.cmp.run_id }}"})
    with pytest.raises(MlprojectError, match="steps.cmp.run_id"):
        step_command(step, ".", {})


def test_parse_step_result_takes_the_last_result_line():
    out = 'x\nMLPROJECT_RESULT {"run_id": "a"}\nnoise\nMLPROJECT_RESULT {"run_id": "b"}\ntrailing log\n'
    assert parse_step_result(out) == {"run_id": "b"}
    assert parse_step_result("no result here") is None


def test_a_pipeline_step_can_evaluate_the_run_an_upstream_step_trained():
    step = PipelineStep(id="eval", entry_point="evaluate", needs=["train"],
                        parameters={"run_id": "{{ steps.train.run_id }}", "datasets": ["pydocs", "wikitext2"]})
    assert step_command(step, "/proj", {"train": {"run_id": "abc"}}) == [
        "mlflow", "run", "/proj", "-e", "evaluate", "--env-manager", "local",
        "-P", "run_id=abc", "-P", "datasets=pydocs wikitext2"]
