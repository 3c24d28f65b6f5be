"""The DAG's mapped form of a compare step: plan task, one mapped child task per child run
(DockerOperator, or a KubernetesPodOperator whose pod spec is built and validated here), and
an aggregate task whose result is the step's."""

from __future__ import annotations

import json

import pytest

from test_dag import PARENT, FakeTI, load_dag_module, pipeline_yaml, render_command  # noqa: F401 (fixture)
from mlproject.errors import ConfigError, MlprojectError
from mlproject.orchestration.graph import load_pipeline
from mlproject.orchestration.steps import sweep_stage_command

CHILDREN = ["a" * 32, "b" * 32]
PLAN_LINE = "MLPROJECT_RESULT " + json.dumps({"step": "compare", "stage": "plan", "run_id": PARENT,
                                              "children": CHILDREN, "todo": CHILDREN[1:]})


@pytest.fixture(scope="module")
def dagmod():
    return load_dag_module()


def build(dagmod, pipeline_yaml, **env):
    return dagmod.build_dag(dagmod.DagSettings.from_env({"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml), **env}))


def test_a_compare_step_is_plan_mapped_children_and_aggregate(dagmod, pipeline_yaml):
    dag = build(dagmod, pipeline_yaml)
    assert sorted(dag.task_ids) == ["compare", "compare__children", "compare__plan", "compare__train", "plot"]
    assert dag.get_task("compare__children").upstream_task_ids == {"compare__plan"}
    assert dag.get_task("compare__train").upstream_task_ids == {"compare__children"}
    assert dag.get_task("compare").upstream_task_ids == {"compare__train"}
    assert dag.get_task("compare").trigger_rule == "all_done"  # aggregate what finished, then fail
    assert dag.get_task("plot").upstream_task_ids == {"compare"}  # the aggregate holds the step's result
    train = dag.get_task("compare__train")
    assert type(train).__name__ == "MappedOperator" and "DockerOperator" in [c.__name__ for c in train.operator_class.__mro__]
    assert train.partial_kwargs["image"] == "mlproject-step:latest"
    assert train.partial_kwargs["retries"] == 2  # per child: a retry runs that child only


def test_mapped_children_take_a_slot_of_the_training_pool_and_only_they_do(dagmod, pipeline_yaml):
    dag = build(dagmod, pipeline_yaml)
    assert dag.get_task("compare__train").partial_kwargs["pool"] == "mlproject_train"
    assert {dag.get_task(t).pool for t in ("compare__plan", "compare", "plot")} == {"default_pool"}
    named = build(dagmod, pipeline_yaml, MLPROJECT_POOL="gpu_slots")
    assert named.get_task("compare__train").partial_kwargs["pool"] == "gpu_slots"
    pods = build(dagmod, pipeline_yaml, MLPROJECT_POOL="gpu_slots", MLPROJECT_CHILD_OPERATOR="kubernetes")
    assert pods.get_task("compare__train").partial_kwargs["pool"] == "gpu_slots"


def test_plan_and_aggregate_commands_are_the_shared_stage_commands(dagmod, pipeline_yaml):
    dag = build(dagmod, pipeline_yaml)
    step = load_pipeline(pipeline_yaml).step("compare")
    plan = render_command(dag, "compare__plan", FakeTI())
    assert plan == sweep_stage_command(step, "plan")
    assert plan == ["mlproject", "compare", "--experiment-name", "unit-exp", "--config", "configs/compare/x.yaml",
                    "--seeds", "42 43", "--plan-only"]
    assert "--resume" in render_command(dag, "compare__plan", FakeTI(try_number=2))
    aggregate = render_command(dag, "compare", FakeTI({"compare__plan": PLAN_LINE}))
    assert aggregate == ["mlproject", "compare", "--aggregate", PARENT]


def test_children_are_train_run_id_commands_for_the_children_left_to_train(dagmod):
    assert dagmod.child_commands(PLAN_LINE) == [["mlproject", "train", "--child-run-id", CHILDREN[1]]]
    with pytest.raises(MlprojectError, match="no MLPROJECT_RESULT line with child run ids"):
        dagmod.child_commands("Traceback ...")


def test_the_aggregate_without_a_plan_result_fails_in_one_line(dagmod, pipeline_yaml):
    dag = build(dagmod, pipeline_yaml)
    with pytest.raises(MlprojectError, match="compare__plan left no MLPROJECT_RESULT"):
        render_command(dag, "compare", FakeTI({}))


def test_a_step_without_stages_is_refused_by_the_stage_builder(pipeline_yaml):
    with pytest.raises(ConfigError, match="entry_point='plot' has no sweep stages"):
        sweep_stage_command(load_pipeline(pipeline_yaml).step("plot"), "plan")


def test_a_bad_sweep_setting_is_a_one_line_error(dagmod):
    with pytest.raises(ConfigError, match="MLPROJECT_CHILD_OPERATOR='slurm' is not a valid value"):
        dagmod.DagSettings.from_env({"MLPROJECT_CHILD_OPERATOR": "slurm"})


# ----------------------------------------------------------------------------- Kubernetes

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: me, user: {token: unused}}]
contexts: [{name: local, context: {cluster: local, user: me}}]
current-context: local
"""


def test_kubernetes_children_run_the_same_command_and_image_in_a_valid_pod(dagmod, pipeline_yaml, tmp_path):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import ApiClient

    env = {"MLPROJECT_CHILD_OPERATOR": "kubernetes", "MLPROJECT_IMAGE": "registry.local/mlproject-step:1",
           "MLFLOW_TRACKING_URI": "http://mlflow.mlops.svc:5000", "MLPROJECT_GPUS": "1",
           "MLPROJECT_K8S_NAMESPACE": "research", "MLPROJECT_K8S_CACHE_PVC": "token-cache",
           "MLPROJECT_K8S_SECRET": "mlflow-credentials"}
    dag = build(dagmod, pipeline_yaml, **env)
    mapped = dag.get_task("compare__train")
    assert mapped.operator_class.__name__ == "KubernetesPodOperator"

    settings = dagmod.DagSettings.from_env({"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml), **env})
    command = dagmod.child_commands(PLAN_LINE)[0]
    kubeconfig = tmp_path / "kubeconfig"  # building the pod reads a cluster config; nothing connects
    kubeconfig.write_text(KUBECONFIG)
    op = KubernetesPodOperator(task_id="child", name="compare-child", arguments=command, config_file=str(kubeconfig),
                               **dagmod.child_pod_arguments(settings, dag.get_task("compare").environment))
    pod = ApiClient().sanitize_for_serialization(op.build_pod_request_obj())
    assert pod["metadata"]["namespace"] == "research"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry.local/mlproject-step:1"
    assert container["command"] == ["mlproject-step"]
    assert container["args"] == ["mlproject", "train", "--child-run-id", CHILDREN[1]]
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "MLFLOW_TRACKING_URI": "http://mlflow.mlops.svc:5000", "MLPROJECT_CACHE_DIR": "/cache", "OMP_NUM_THREADS": "1"}
    assert container["envFrom"] == [{"secretRef": {"name": "mlflow-credentials"}}]  # credentials stay in the Secret
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["volumeMounts"] == [{"mountPath": "/cache", "name": "cache"}]
    assert pod["spec"]["volumes"] == [{"name": "cache", "persistentVolumeClaim": {"claimName": "token-cache"}}]
    assert pod["spec"]["restartPolicy"] == "Never"  # Airflow retries the task, not the kubelet


def test_kubernetes_children_without_gpus_ask_for_none(dagmod, pipeline_yaml):
    settings = dagmod.DagSettings.from_env({"MLPROJECT_PIPELINE_CONFIG": str(pipeline_yaml)})
    limits = dagmod.child_pod_arguments(settings, {})["container_resources"].limits
    assert "nvidia.com/gpu" not in limits


def test_the_mapped_dag_parses_in_a_dagbag(monkeypatch, pipeline_yaml):
    from airflow.dag_processing.dagbag import DagBag

    from test_dag import DAG_FILE

    monkeypatch.setenv("MLPROJECT_PIPELINE_CONFIG", str(pipeline_yaml))
    monkeypatch.delenv("MLPROJECT_SWEEP_TASKS", raising=False)
    bag = DagBag(dag_folder=str(DAG_FILE.parent))
    assert bag.import_errors == {}
    assert "compare__train" in bag.dags["gpt_research_pipeline"].task_ids


def test_an_adaptive_compare_step_runs_as_one_task_that_resumes_on_a_retry(dagmod, tmp_path):
    import yaml

    path = tmp_path / "adaptive.yaml"
    path.write_text(yaml.safe_dump({
        "pipeline": {"name": "unit", "experiment_name": "unit-exp"},
        "steps": [{"id": "compare", "entry_point": "compare",
                   "parameters": {"config": "configs/compare/x.yaml", "seeds": [42, 43], "adaptive_seeds": 6}}],
    }, sort_keys=False))
    dag = build(dagmod, path)
    assert dag.task_ids == ["compare"]  # no plan/children/aggregate: the looks decide the seeds
    command = render_command(dag, "compare", FakeTI(try_number=2))
    assert command[:4] == ["mlflow", "run", "/app", "-e"] and "adaptive_seeds=6" in command
    assert "resume=true" in command


def test_kubernetes_children_without_the_provider_are_one_line_naming_the_extra(dagmod, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m.startswith("airflow.providers.cncf.kubernetes")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "airflow.providers.cncf.kubernetes", None)  # the extra not installed
    with pytest.raises(MlprojectError) as info:
        dagmod.DagSettings.from_env({"MLPROJECT_CHILD_OPERATOR": "kubernetes"})
    assert str(info.value) == ("MLPROJECT_CHILD_OPERATOR=kubernetes needs the optional extra 'kubernetes': "
                               "pip install 'mlproject[kubernetes]'")


def test_a_ladder_step_is_plan_mapped_children_and_aggregate_like_a_compare(dagmod, tmp_path):
    import yaml

    path = tmp_path / "ladder_pipeline.yaml"
    path.write_text(yaml.safe_dump({
        "pipeline": {"name": "unit", "experiment_name": "unit-exp"},
        "steps": [{"id": "ladder", "entry_point": "ladder",
                   "parameters": {"config": "configs/ladder/gpt2_vs_gpt3_ladder_offline.yaml", "holdout": 1}},
                  {"id": "plot", "entry_point": "plot", "needs": ["ladder"],
                   "parameters": {"parent_run_id": "{{ steps.ladder.run_id }}", "kind": "ladder"}}],
    }, sort_keys=False))
    dag = build(dagmod, path)
    assert sorted(dag.task_ids) == ["ladder", "ladder__children", "ladder__plan", "ladder__train", "plot"]
    step = load_pipeline(path).step("ladder")
    assert sweep_stage_command(step, "plan") == [
        "mlproject", "ladder", "--experiment-name", "unit-exp", "--config",
        "configs/ladder/gpt2_vs_gpt3_ladder_offline.yaml", "--holdout", "1", "--plan-only"]
    assert sweep_stage_command(step, "aggregate", parent_run_id=PARENT) == ["mlproject", "ladder", "--aggregate",
                                                                            PARENT]
