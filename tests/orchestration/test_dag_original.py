"""The DAG built from a pipeline file of the original suite (`GPT_PIPELINE_CONFIG`, as the
original's DAG read it): one task per enabled step, each after the one before it, running the
step's `mlproject` command; the mapped form of its sweeps; its flags checked at parse time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from test_dag import FakeTI, load_dag_module, render_command
from mlproject.errors import MlprojectError
from mlproject.orchestration.graph import load_pipeline
from mlproject.orchestration.steps import step_command, sweep_stage_command


@pytest.fixture(scope="module")
def dagmod():
    return load_dag_module()


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def original_pipeline(tmp_path: Path) -> Path:
    """The original's research pipeline shape: compare, a disabled ablation, two plots (one inline)."""
    write(tmp_path / "configs/compare/c.yaml", {"name": "c", "script": "scripts/compare_models.py",
                                                "args": {"models": ["gpt2", "gpt3"], "seeds": [42, 43],
                                                         "val-checking": True, "device": "cpu"}})
    write(tmp_path / "configs/ablation/a.yaml", {"name": "a", "script": "scripts/run_ablations.py",
                                                 "args": {"ablation-axis": "norm_type"}})
    return write(tmp_path / "configs/pipeline/p.yaml", {
        "name": "research_small_repro", "project_root": str(tmp_path), "env": {"PYTHONUNBUFFERED": 1},
        "steps": [{"id": "compare", "enabled": True, "config": "configs/compare/c.yaml"},
                  {"id": "ablation", "enabled": False, "config": "configs/ablation/a.yaml"},
                  {"id": "plot_compare", "script": "scripts/plot_results.py",
                   "args": {"results": ["research_runs/compare/c/results.jsonl"], "kind": "compare"}}]})


def build(dagmod, config: Path, **env: str):
    # GPT_PIPELINE_CONFIG: the original DAG's variable, read when MLPROJECT_PIPELINE_CONFIG is unset
    return dagmod.build_dag(dagmod.DagSettings.from_env({"GPT_PIPELINE_CONFIG": str(config), **env}))


def test_one_task_per_enabled_step_each_after_the_one_before(dagmod, original_pipeline):
    dag = build(dagmod, original_pipeline, MLPROJECT_SWEEP_TASKS="single")
    assert sorted(dag.task_ids) == ["compare", "plot_compare"]  # the disabled ablation has no task
    assert dag.get_task("compare").upstream_task_ids == set()
    assert dag.get_task("plot_compare").upstream_task_ids == {"compare"}


def test_each_task_runs_the_steps_mlproject_command_with_the_pipelines_env(dagmod, original_pipeline):
    dag = build(dagmod, original_pipeline, MLPROJECT_SWEEP_TASKS="single")
    pipeline = load_pipeline(original_pipeline)
    command = render_command(dag, "compare", FakeTI())
    assert command == step_command(pipeline.step("compare"))
    assert command == ["mlproject", "compare", "--models", "gpt2", "gpt3", "--seeds", "42", "43", "--val-checking",
                       "--device", "cpu", "--profile", "original"]
    assert render_command(dag, "plot_compare", FakeTI()) == [
        "mlproject", "plot", "--results", "research_runs/compare/c/results.jsonl", "--kind", "compare",
        "--profile", "original"]
    assert dag.get_task("compare").environment["PYTHONUNBUFFERED"] == "1"


def test_a_retried_task_resumes_its_sweep(dagmod, original_pipeline):
    dag = build(dagmod, original_pipeline, MLPROJECT_SWEEP_TASKS="single")
    assert render_command(dag, "compare", FakeTI(try_number=2))[-1] == "--resume"


def test_a_sweep_step_maps_its_children_with_the_shared_plan_command(dagmod, original_pipeline):
    dag = build(dagmod, original_pipeline)
    assert sorted(dag.task_ids) == ["compare", "compare__children", "compare__plan", "compare__train",
                                    "plot_compare"]
    assert dag.get_task("plot_compare").upstream_task_ids == {"compare"}
    plan = render_command(dag, "compare__plan", FakeTI())
    assert plan == sweep_stage_command(load_pipeline(original_pipeline).step("compare"), "plan")
    assert plan[-3:] == ["--profile", "original", "--plan-only"]


def test_an_unknown_flag_becomes_the_one_task_that_explains(dagmod, original_pipeline):
    write(original_pipeline.parent.parent / "compare/c.yaml",
          {"script": "scripts/compare_models.py", "args": {"seedz": [1]}})
    dag = build(dagmod, original_pipeline)
    assert dag.task_ids == ["pipeline_config_missing"]
    with pytest.raises(MlprojectError, match=r"unknown key args\.seedz"):
        dag.get_task("pipeline_config_missing").python_callable()
