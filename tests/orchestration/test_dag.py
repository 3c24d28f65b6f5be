"""The Airflow DAG built from a pipeline YAML: parsing, tasks, operator arguments, commands."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from mlproject.errors import MlprojectError
from mlproject.orchestration.graph import load_pipeline
from mlproject.orchestration.steps import step_command

DAG_FILE = Path(__file__).resolve().parents[2] / "airflow" / "dags" / "gpt_research_pipeline.py"
PARENT = "0123456789abcdef0123456789abcdef"


def load_dag_module():
    spec = importlib.util.spec_from_file_location("gpt_research_pipeline_under_test", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dagmod():
    return load_dag_module()


@pytest.fixture
def pipeline_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({
        "pipeline": {"name": "unit", "experiment_name": "unit-exp", "env": {"OMP_NUM_THREADS": 1}},
        "steps": [
            {"id": "compare", "entry_point": "compare", "parameters": {"config": "configs/compare/x.yaml",
                                                                     "seeds": [42, 43]}},
            {"id": "ablation", "entry_point": "ablation", "enabled": False},
            {"id": "plot", "entry_point": "plot", "needs": ["compare"],
             "parameters": {"parent_run_id": "{{ steps.compare.run_id }}"}},
        ],
    }, sort_keys=False))
    return path


class FakeTI:
    """What the command macro uses of a task instance: XCom of upstream tasks and the try number."""

    def __init__(self, xcoms: dict[str, str] | None = None, try_number: int = 1) -> None:
        self.xcoms = xcoms or {}
        self.try_number = try_number

    def xcom_pull(self, task_ids: str):
        return self.xcoms.get(task_ids)


def build(dagmod, env: dict[str, str]):
    """The DAG with one container per step (MLPROJECT_SWEEP_TASKS=single) unless `env` says
    otherwise; test_dag_sweep_stages.py covers the mapped form of compare/ablation steps."""
    return dagmod.build_dag(dagmod.DagSettings.from_env({"MLPROJECT_SWEEP_TASKS": "single", **env}))


def render_command(dag, task_id: str, ti: FakeTI, params: dict | None = None) -> list[str]:
    """Render the task's templated command the way Airflow does, then parse it as DockerOperator does."""
    task = dag.get_task(task_id)
    template = dag.get_template_env().from_string(task.command)
    params = params or {"pipeline_config": dag.params["pipeline_config"]}
    rendered = template.render(ti=ti, params=params, **dag.user_defined_macros)
    return task.format_command(rendered)


# ----------------------------------------------------------------------------- parsing

def parse_with_dagbag(monkeypatch, config: Path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("MLPROJECT_PIPELINE_CONFIG", str(config))
    monkeypatch.setenv("MLPROJECT_SWEEP_TASKS", "single")
    bag = DagBag(dag_folder=str(DAG_FILE.parent))
    return bag


def test_dag_parses_without_import_errors(monkeypatch, pipeline_yaml):
    bag = parse_with_dagbag(monkeypatch, pipeline_yaml)
    assert bag.import_errors == {}
    assert sorted(bag.dags["gpt_research_pipeline"].task_ids) == ["compare", "plot"]


def test_missing_config_parses_to_one_task_that_explains(monkeypatch, tmp_path):
    bag = parse_with_dagbag(monkeypatch, tmp_path / "nope.yaml")
    assert bag.import_errors == {}
    dag = bag.dags["gpt_research_pipeline"]
    assert dag.task_ids == ["pipeline_config_missing"]
    with pytest.raises(MlprojectError, match=r"nope\.yaml.*set MLPROJECT_PIPELINE_CONFIG"):
        dag.get_task("pipeline_config_missing").python_callable()


def test_default_config_is_the_repos_research_pipeline(dagmod):
    settings = dagmod.DagSettings.from_env({"MLPROJECT_SWEEP_TASKS": "single"})
    assert settings.pipeline_config.endswith("configs/pipeline/research_small_repro.yaml")
    dag = dagmod.build_dag(settings)
    pipeline = load_pipeline(settings.pipeline_config)
    assert sorted(dag.task_ids) == sorted(s.id for s in pipeline.steps if s.enabled)
    for step in pipeline.steps:
        if step.enabled:
            assert dag.get_task(step.id).upstream_task_ids == set(step.needs)


# ----------------------------------------------------------------------------- structure

def test_one_task_per_enabled_step_with_needs_as_dependencies(dagmod, pipeline_yaml):
    dag = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)})
    assert sorted(dag.task_ids) == ["compare", "plot"]  # the disabled ablation step has no task
    assert dag.get_task("plot").upstream_task_ids == {"compare"}
    assert dag.get_task("compare").upstream_task_ids == set()


def test_operator_arguments_follow_the_settings(dagmod, pipeline_yaml):
    dag = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml), "MLPROJECT_IMAGE": "img:1",
                         "MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLPROJECT_DOCKER_NETWORK": "mlproject",
                         "MLPROJECT_RETRIES": "3", "MLPROJECT_RETRY_DELAY_S": "5", "MLPROJECT_TASK_TIMEOUT_MIN": "90"})
    task = dag.get_task("compare")
    assert task.image == "img:1"
    assert task.mount_tmp_dir is False
    assert task.auto_remove == "success"
    assert task.network_mode == "mlproject"
    assert task.do_xcom_push is True and task.xcom_all is False
    assert task.retries == 3
    assert task.retry_delay == timedelta(seconds=5)
    assert task.retry_exponential_backoff == 2.0
    assert task.execution_timeout == timedelta(minutes=90)
    assert task.environment == {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLPROJECT_CACHE_DIR": "/cache",
                                "OMP_NUM_THREADS": "1"}
    assert task.labels == {"mlproject.dag": "gpt_research_pipeline", "mlproject.step": "compare"}
    assert task.device_requests is None


def test_cache_is_a_named_volume_or_a_host_directory(dagmod, pipeline_yaml, tmp_path):
    named = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)}).get_task("compare").mounts
    assert [(m["Target"], m["Source"], m["Type"]) for m in named] == [("/cache", "mlproject-cache", "volume")]
    bound = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml), "MLPROJECT_CACHE_VOLUME": str(tmp_path),
                           "MLPROJECT_CONFIG_MOUNT": "/srv/configs"}).get_task("compare").mounts
    assert [(m["Target"], m["Source"], m["Type"], m["ReadOnly"]) for m in bound] == [
        ("/cache", str(tmp_path), "bind", False), ("/srv/configs", "/srv/configs", "bind", True)]


def test_gpus_become_device_requests(dagmod, pipeline_yaml):
    every = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml), "MLPROJECT_GPUS": "all"})
    (request,) = every.get_task("compare").device_requests
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
    two = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml), "MLPROJECT_GPUS": "2"})
    assert two.get_task("compare").device_requests[0]["Count"] == 2


def test_a_bad_setting_is_a_one_line_config_error(dagmod):
    from mlproject.errors import ConfigError

    with pytest.raises(ConfigError, match="MLPROJECT_RETRIES='many' is not a valid value; expected int"):
        dagmod.DagSettings.from_env({"MLPROJECT_RETRIES": "many"})
    with pytest.raises(ConfigError, match="MLPROJECT_GPUS='two'"):
        dagmod.DagSettings.from_env({"MLPROJECT_GPUS": "two"})


def test_schedule_is_manual_unless_set(dagmod, pipeline_yaml):
    assert build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)}).schedule is None
    daily = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml), "MLPROJECT_DAG_SCHEDULE": "@daily"})
    assert daily.schedule == "@daily"


def test_pipeline_config_is_a_dag_param(dagmod, pipeline_yaml):
    dag = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)})
    assert dag.params["pipeline_config"] == str(pipeline_yaml)


# ----------------------------------------------------------------------------- commands

def test_command_is_the_shared_step_command(dagmod, pipeline_yaml):
    dag = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)})
    step = load_pipeline(pipeline_yaml).step("compare")
    assert render_command(dag, "compare", FakeTI()) == step_command(step, "/app")


def test_downstream_command_gets_the_upstream_run_id_from_xcom(dagmod, pipeline_yaml):
    dag = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)})
    last_line = "MLPROJECT_RESULT " + json.dumps({"step": "compare", "run_id": PARENT, "status": "FINISHED"})
    command = render_command(dag, "plot", FakeTI({"compare": last_line}))
    step = load_pipeline(pipeline_yaml).step("plot")
    assert command == step_command(step, "/app", {"compare": {"run_id": PARENT}})
    assert f"parent_run_id={PARENT}" in command


def test_downstream_command_without_an_upstream_result_fails_in_one_line(dagmod, pipeline_yaml):
    dag = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)})
    with pytest.raises(MlprojectError, match="steps.compare.run_id"):
        render_command(dag, "plot", FakeTI({"compare": "mlflow: run succeeded"}))


def test_a_retry_resumes_the_compare(dagmod, pipeline_yaml):
    dag = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)})
    first = render_command(dag, "compare", FakeTI(try_number=1))
    retry = render_command(dag, "compare", FakeTI(try_number=2))
    assert "resume=true" not in first
    assert retry == step_command(load_pipeline(pipeline_yaml).step("compare"), "/app", resume=True)
    assert "resume=true" in retry


def test_the_param_chooses_the_config_at_run_time(dagmod, pipeline_yaml, tmp_path):
    other = tmp_path / "other.yaml"
    data = yaml.safe_load(pipeline_yaml.read_text())
    data["steps"][0]["parameters"]["seeds"] = [7]
    other.write_text(yaml.safe_dump(data))
    dag = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)})
    command = render_command(dag, "compare", FakeTI(), params={"pipeline_config": str(other)})
    assert "seeds=7" in command


# ----------------------------------------------------------------------------- credentials

def test_credentials_go_only_to_the_private_environment(dagmod, pipeline_yaml, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    dag = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)})
    task = dag.get_task("compare")
    assert task._private_environment == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "s3cret"}
    assert "private_environment" not in task.template_fields
    logged = json.dumps([task.environment, render_command(dag, "compare", FakeTI()), task.command])
    assert "s3cret" not in logged and "alice" not in logged


def run_without_docker(dagmod, monkeypatch, task) -> dict[str, str]:
    """What the container of `task` would get as private environment (DockerOperator's own
    execute, which starts the container, replaced by reading it)."""
    monkeypatch.setattr(dagmod.DockerOperator, "execute", lambda self, context: dict(self._private_environment))
    return task.execute({})


def test_the_steps_get_the_login_of_the_mlflow_connection_when_the_task_runs(dagmod, pipeline_yaml, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    dag = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)})
    task = dag.get_task("plot")
    assert task.mlflow_conn_id == "mlflow_default" and task._private_environment == {}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "http", "login": "bob",
                                                                   "password": "p@ss:w/rd"}))
    assert run_without_docker(dagmod, monkeypatch, task) == {"MLFLOW_TRACKING_USERNAME": "bob",
                                                             "MLFLOW_TRACKING_PASSWORD": "p@ss:w/rd"}
    assert "p@ss" not in json.dumps([task.environment, task.command])


def test_credentials_in_the_workers_environment_win_over_the_connection(dagmod, pipeline_yaml, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "http", "login": "bob",
                                                                   "password": "other"}))
    dag = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)})
    assert run_without_docker(dagmod, monkeypatch, dag.get_task("plot")) == {
        "MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "s3cret"}


def test_without_the_connection_the_steps_get_no_credentials(dagmod, pipeline_yaml, monkeypatch):
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    dag = build(dagmod, {"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)})
    assert run_without_docker(dagmod, monkeypatch, dag.get_task("plot")) == {}
