"""`gpt_research_pipeline`: a pipeline YAML as an Airflow DAG of DockerOperator tasks.

One task per enabled step of the pipeline YAML (configs/pipeline/), wired by the steps'
`needs`. Every task runs, in the step image (docker/Dockerfile), exactly the command that
`mlproject pipeline` runs for that step: `mlproject.orchestration.steps.step_command` builds
it, so the DAG never re-implements a step. Steps log to one MLflow tracking server.

Results flow through XCom: the image's entry point prints the step's `MLPROJECT_RESULT {json}`
line last, DockerOperator pushes that last line, and a downstream step's command is built at
run time from its upstream results (`parse_step_result`), so `{{ steps.compare.run_id }}` in
the plot step becomes the compare step's parent run. A retried task resumes its step
(`resume=true` on every try after the first), so a retry of a compare or ablation keeps the
child runs that finished and resumes the ones that were cut off.

Settings (environment of the DAG processor and workers):

    MLPROJECT_PIPELINE_CONFIG  pipeline YAML (default configs/pipeline/research_small_repro.yaml);
                               the DAG param `pipeline_config` overrides it for one run
                               (the original suite's GPT_PIPELINE_CONFIG is read when it is unset;
                               its GPT_PYTHON_BIN no longer applies and only logs a warning).
                               A pipeline in the original's format works too: one task per
                               enabled step, each after the one before it, running
                               `mlproject <command> <its args> --profile original`
    MLFLOW_TRACKING_URI        tracking server the steps log to (http://127.0.0.1:5000)
    MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN   passed to the steps, never logged
    MLPROJECT_MLFLOW_CONN_ID   an Airflow connection whose login and password the steps log
                               with when the variables above are unset (mlflow_default): read
                               when a task runs, from any secrets backend, e.g. the variable
                               AIRFLOW_CONN_MLFLOW_DEFAULT='{"conn_type": "http", "login": "admin",
                               "password": "..."}' (the compose stack sets it)
    MLPROJECT_IMAGE            step image (mlproject-step:latest)
    MLPROJECT_DOCKER_NETWORK   container network mode (host)
    MLPROJECT_CACHE_VOLUME     token cache shared by the steps: a volume name or an absolute
                               host path (mlproject-cache)
    MLPROJECT_CONFIG_MOUNT     a host directory mounted read-only at the same path in every
                               step container, for configs outside the image (unset: none)
    MLPROJECT_PROJECT_DIR      the MLflow project inside the image (/app)
    MLPROJECT_GPUS             GPUs per step container: "all", a count, or unset for none
    MLPROJECT_RETRIES, MLPROJECT_RETRY_DELAY_S, MLPROJECT_TASK_TIMEOUT_MIN
    MLPROJECT_DAG_SCHEDULE     a cron expression or preset (@daily); unset: manual runs only
    MLPROJECT_SWEEP_TASKS      mapped (default): a compare/ablation/ladder step is a plan task, one
                               mapped task per child and an aggregate task; single: one
                               container runs the whole sweep (`mlflow run -e compare`), as
                               it always does for a step with adaptive_seeds (its rounds)
    MLPROJECT_CHILD_OPERATOR   docker (default) or kubernetes: what runs a mapped child task
    MLPROJECT_POOL             the Airflow pool mapped children take their slot from
                               (mlproject_train): its slots bound how many children train at
                               once on this deployment, whatever the executor's parallelism.
                               Airflow schedules no task of a pool that does not exist, so
                               create it once (the compose stack does, with
                               MLPROJECT_POOL_SLOTS slots, default 1):
                                   airflow pools set mlproject_train 2 "mlproject training slots"
    MLPROJECT_K8S_NAMESPACE, MLPROJECT_K8S_CACHE_PVC, MLPROJECT_K8S_SECRET, MLPROJECT_K8S_CPU,
    MLPROJECT_K8S_MEMORY       the child pods' namespace, the token-cache PersistentVolumeClaim,
                               a Secret with the MLflow credentials, and their CPU/memory requests

Mapped sweeps: the plan task creates the parent and its SCHEDULED children and pushes their
run ids; `.expand()` starts one `mlproject train --child-run-id CHILD` task per child, so the
executor spreads them over its workers (and retries each alone: a retried child resumes from
the last checkpoint in its run's artifacts on the tracking server); the aggregate task, with
the step's id (downstream `{{ steps.<id>.run_id }}` reads its result), runs even when some
children failed, records what finished and fails the step if anything did not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG, Param, task
from docker.types import DeviceRequest, Mount

from mlproject.cli import known_flags
from mlproject.errors import ConfigError, MlprojectError, require_extra
from mlproject.orchestration.graph import load_pipeline
from mlproject.orchestration.steps import RESUMABLE, runs_in_rounds, step_command, step_env, sweep_stage_command
from mlproject.protocol import parse_step_result
from mlproject.research.sweep import child_command

log = logging.getLogger(__name__)
DAG_ID = "gpt_research_pipeline"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "configs" / "pipeline" / "research_small_repro.yaml"
CACHE_TARGET = "/cache"
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@dataclass
class DagSettings:
    """Everything the DAG is built from besides the pipeline YAML (see the module doc)."""

    pipeline_config: str
    tracking_uri: str = "http://127.0.0.1:5000"
    image: str = "mlproject-step:latest"
    network_mode: str = "host"
    cache_volume: str = "mlproject-cache"
    config_mount: str | None = None
    project_dir: str = "/app"
    gpus: str | None = None
    retries: int = 2
    retry_delay_s: float = 30.0
    task_timeout_min: float = 360.0
    schedule: str | None = None
    sweep_tasks: str = "mapped"
    child_operator: str = "docker"
    k8s_namespace: str = "default"
    k8s_cache_pvc: str | None = None
    k8s_secret: str | None = None
    k8s_cpu: str = "2"
    k8s_memory: str = "8Gi"
    pool: str = "mlproject_train"
    mlflow_conn_id: str | None = "mlflow_default"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DagSettings:
        env = os.environ if env is None else env

        def get(name: str, default: Any = None) -> Any:
            value = env.get(name, "").strip()
            return value if value else default

        def number(name: str, default: float, cast: type = float) -> Any:
            value = get(name, default)
            try:
                return cast(value)
            except ValueError:
                raise ConfigError(f"{name}={value!r} is not a valid value; expected {cast.__name__}") from None

        config_mount = get("MLPROJECT_CONFIG_MOUNT")
        if config_mount is not None and not config_mount.startswith("/"):
            raise ConfigError(f"MLPROJECT_CONFIG_MOUNT={config_mount!r} is not an absolute host directory")
        choices = {"MLPROJECT_SWEEP_TASKS": ("mapped", "single"), "MLPROJECT_CHILD_OPERATOR": ("docker", "kubernetes")}
        for name, allowed in choices.items():
            if get(name) is not None and get(name) not in allowed:
                raise ConfigError(f"{name}={get(name)!r} is not a valid value; expected one of {', '.join(allowed)}")
        if get("MLPROJECT_CHILD_OPERATOR") == "kubernetes":  # at parse time, one line, not an import traceback
            _pod_operator()
        gpus = get("MLPROJECT_GPUS")
        if gpus is not None and gpus != "all" and not gpus.isdigit():
            raise ConfigError(f"MLPROJECT_GPUS={gpus!r} is not a valid value; expected 'all' or a count")

        if get("GPT_PYTHON_BIN"):
            log.warning("GPT_PYTHON_BIN=%s is ignored: every step runs `mlproject` in the step image "
                        "(MLPROJECT_IMAGE), with that image's Python", get("GPT_PYTHON_BIN"))
        return cls(
            pipeline_config=get("MLPROJECT_PIPELINE_CONFIG", get("GPT_PIPELINE_CONFIG", str(DEFAULT_CONFIG))),
            tracking_uri=get("MLFLOW_TRACKING_URI", cls.tracking_uri),
            image=get("MLPROJECT_IMAGE", cls.image),
            network_mode=get("MLPROJECT_DOCKER_NETWORK", cls.network_mode),
            cache_volume=get("MLPROJECT_CACHE_VOLUME", cls.cache_volume),
            config_mount=config_mount,
            project_dir=get("MLPROJECT_PROJECT_DIR", cls.project_dir),
            gpus=gpus,
            retries=number("MLPROJECT_RETRIES", cls.retries, int),
            retry_delay_s=number("MLPROJECT_RETRY_DELAY_S", cls.retry_delay_s),
            task_timeout_min=number("MLPROJECT_TASK_TIMEOUT_MIN", cls.task_timeout_min),
            schedule=get("MLPROJECT_DAG_SCHEDULE"),
            sweep_tasks=get("MLPROJECT_SWEEP_TASKS", cls.sweep_tasks),
            child_operator=get("MLPROJECT_CHILD_OPERATOR", cls.child_operator),
            k8s_namespace=get("MLPROJECT_K8S_NAMESPACE", cls.k8s_namespace),
            k8s_cache_pvc=get("MLPROJECT_K8S_CACHE_PVC"),
            k8s_secret=get("MLPROJECT_K8S_SECRET"),
            k8s_cpu=get("MLPROJECT_K8S_CPU", cls.k8s_cpu),
            k8s_memory=get("MLPROJECT_K8S_MEMORY", cls.k8s_memory),
            pool=get("MLPROJECT_POOL", cls.pool),
            mlflow_conn_id=get("MLPROJECT_MLFLOW_CONN_ID", cls.mlflow_conn_id),
        )

    def mounts(self) -> list[Mount]:
        # An absolute path is a host directory (bind); anything else a named volume.
        kind = "bind" if self.cache_volume.startswith("/") else "volume"
        mounts = [Mount(target=CACHE_TARGET, source=self.cache_volume, type=kind)]
        if self.config_mount:
            mounts.append(Mount(target=self.config_mount, source=self.config_mount, type="bind", read_only=True))
        return mounts

    def device_requests(self) -> list[DeviceRequest] | None:
        if not self.gpus:
            return None
        count = -1 if self.gpus == "all" else int(self.gpus)
        return [DeviceRequest(count=count, capabilities=[["gpu"]])]


def private_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """MLflow credentials of the worker, for the containers: not templated, rendered or logged."""
    env = os.environ if env is None else env
    return {name: env[name] for name in CREDENTIALS if env.get(name)}


def connection_credentials(conn_id: str | None) -> dict[str, str]:
    """MLFLOW_TRACKING_USERNAME / _PASSWORD from the login and password of the Airflow connection
    `conn_id` ({} when it is unset or not defined). Airflow masks the password in task logs."""
    if not conn_id:
        return {}
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return {}
    pairs = (("MLFLOW_TRACKING_USERNAME", conn.login), ("MLFLOW_TRACKING_PASSWORD", conn.password))
    return {name: value for name, value in pairs if value}


class StepOperator(DockerOperator):
    """DockerOperator whose container also gets the MLflow credentials of an Airflow connection,
    looked up when the task runs, in its private environment (never templated, rendered or
    logged); credentials in the worker's environment win."""

    def __init__(self, *, mlflow_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Any) -> Any:
        # `_private_environment` is where DockerOperator keeps `private_environment` (provider 4.x)
        self._private_environment = {**connection_credentials(self.mlflow_conn_id), **self._private_environment}
        return super().execute(context)


def render_step_command(ti: Any, params: Mapping[str, Any], step_id: str, project_dir: str) -> str:
    """The step's command at run time, as the Python literal DockerOperator turns into a list.

    Built from the run's `pipeline_config` param with the upstream steps' results from XCom,
    and with resume=true on a retry (a compare/ablation retry keeps its finished children).
    """
    step, upstream = _step_and_upstream(ti, params, step_id)
    return repr(step_command(step, project_dir, upstream, resume=ti.try_number > 1))


def render_plan_command(ti: Any, params: Mapping[str, Any], step_id: str) -> str:
    """The plan stage of a mapped compare/ablation step (resumed on a retry)."""
    step, upstream = _step_and_upstream(ti, params, step_id)
    return repr(sweep_stage_command(step, "plan", upstream, resume=ti.try_number > 1))


def _step_and_upstream(ti: Any, params: Mapping[str, Any], step_id: str) -> tuple[Any, dict[str, Any]]:
    """The step of the run's pipeline and the results (from XCom) of the steps it references."""
    step = load_pipeline(params["pipeline_config"]).step(step_id)
    upstream = {}
    for ref in sorted(step.references() | set(step.needs)):
        result = parse_step_result(ti.xcom_pull(task_ids=ref) or "")
        if result is not None:
            upstream[ref] = result
    return step, upstream


def render_aggregate_command(ti: Any, params: Mapping[str, Any], step_id: str) -> str:
    """The aggregate stage: the parent run id comes from the plan task's result."""
    step = load_pipeline(params["pipeline_config"]).step(step_id)
    plan = parse_step_result(ti.xcom_pull(task_ids=plan_task_id(step_id)) or "")
    if plan is None:
        raise MlprojectError(f"step {step_id}: the plan task {plan_task_id(step_id)} left no MLPROJECT_RESULT line")
    return repr(sweep_stage_command(step, "aggregate", parent_run_id=plan["run_id"]))


def plan_task_id(step_id: str) -> str:
    return f"{step_id}__plan"


def child_commands(plan_output: str | None) -> list[list[str]]:
    """One `mlproject train --child-run-id` command per child the plan left to train."""
    plan = parse_step_result(plan_output or "")
    if plan is None or "todo" not in plan:
        raise MlprojectError(f"the plan task left no MLPROJECT_RESULT line with child run ids: {plan_output!r}")
    return [child_command(run_id) for run_id in plan["todo"]]


_K8S_FEATURE = "MLPROJECT_CHILD_OPERATOR=kubernetes"


def _pod_operator() -> Any:
    """Airflow's KubernetesPodOperator, or one line naming the extra that installs its provider."""
    return require_extra("airflow.providers.cncf.kubernetes.operators.pod", "kubernetes",
                         _K8S_FEATURE).KubernetesPodOperator


def child_pod_arguments(settings: DagSettings, environment: Mapping[str, str]) -> dict[str, Any]:
    """KubernetesPodOperator arguments of a child pod: the step image, the same command
    (`arguments`, expanded per child), the MLflow settings, GPUs as `nvidia.com/gpu` limits."""
    k8s = require_extra("kubernetes.client.models", "kubernetes", _K8S_FEATURE)
    limits = {"cpu": settings.k8s_cpu, "memory": settings.k8s_memory}
    if settings.gpus:  # Kubernetes counts GPUs: "all" has no meaning for a pod, take one
        limits["nvidia.com/gpu"] = "1" if settings.gpus == "all" else settings.gpus
    volumes, mounts = [], []
    if settings.k8s_cache_pvc:
        volumes.append(k8s.V1Volume(name="cache", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=settings.k8s_cache_pvc)))
        mounts.append(k8s.V1VolumeMount(name="cache", mount_path=CACHE_TARGET))
    return dict(
        namespace=settings.k8s_namespace,
        image=settings.image,
        cmds=["mlproject-step"],
        env_vars=[k8s.V1EnvVar(name=k, value=v) for k, v in sorted(environment.items())],
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=settings.k8s_secret))]
        if settings.k8s_secret else None,
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": settings.k8s_cpu, "memory": settings.k8s_memory}, limits=limits),
        volumes=volumes,
        volume_mounts=mounts,
        labels={"mlproject.dag": DAG_ID},
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
        do_xcom_push=False,
    )


def build_dag(settings: DagSettings) -> DAG:
    """The DAG for `settings`: the pipeline's steps, or one task explaining what is wrong."""
    dag = DAG(
        dag_id=DAG_ID,
        description="GPT-2 vs GPT-3 research pipeline: one container per step, one MLflow server",
        schedule=settings.schedule,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,
        doc_md=__doc__,
        tags=["mlproject", "mlflow", "docker"],
        params={"pipeline_config": Param(settings.pipeline_config, type="string",
                                         description="pipeline YAML whose step commands this run executes")},
        user_defined_macros={
            "mlproject_step_command": lambda ti, params, step_id: render_step_command(
                ti, params, step_id, settings.project_dir),
            "mlproject_plan_command": render_plan_command,
            "mlproject_aggregate_command": render_aggregate_command,
        },
        default_args={
            "retries": settings.retries,
            "retry_delay": timedelta(seconds=settings.retry_delay_s),
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": timedelta(minutes=30),
            "execution_timeout": timedelta(minutes=settings.task_timeout_min),
        },
    )
    try:
        pipeline = load_pipeline(settings.pipeline_config, known_flags)
    except MlprojectError as exc:
        problem = str(exc)

        @task(task_id="pipeline_config_missing", dag=dag, retries=0,
              doc_md=f"**{problem}**\n\nSet MLPROJECT_PIPELINE_CONFIG to a pipeline YAML readable here.")
        def pipeline_config_missing() -> None:
            raise MlprojectError(f"{problem}; set MLPROJECT_PIPELINE_CONFIG to a pipeline YAML "
                                 f"(configs/pipeline/*.yaml) readable by the Airflow workers")

        pipeline_config_missing()
        return dag

    environment = step_env(base={}, extra={**pipeline.settings.env, "MLFLOW_TRACKING_URI": settings.tracking_uri,
                                           "MLPROJECT_CACHE_DIR": CACHE_TARGET})
    def docker_task(task_id: str, step_id: str, command: str, stage: str | None = None,
                    **kwargs: Any) -> DockerOperator:
        return StepOperator(task_id=task_id, dag=dag, image=settings.image, command=command,
                              **docker_arguments(step_id, stage), **kwargs)

    def docker_arguments(step_id: str, stage: str | None = None) -> dict[str, Any]:
        labels = {"mlproject.dag": DAG_ID, "mlproject.step": step_id}
        if stage:  # plan | train | aggregate: which stage of a mapped sweep a container runs
            labels["mlproject.stage"] = stage
        return dict(environment=dict(environment), private_environment=private_environment(),
                    mlflow_conn_id=settings.mlflow_conn_id,
                    mounts=settings.mounts(), network_mode=settings.network_mode,
                    device_requests=settings.device_requests(), labels=labels,
                    auto_remove="success", mount_tmp_dir=False)

    first: dict[str, Any] = {}   # the task a step starts with (its upstream steps point here)
    last: dict[str, Any] = {}    # the task whose result is the step's (task id = step id)
    for step in pipeline.steps:
        if not step.enabled:
            continue
        doc = f"`{step.entry_point}` step; needs: {', '.join(step.needs) or 'nothing'}"
        if settings.sweep_tasks == "mapped" and step.entry_point in RESUMABLE and not runs_in_rounds(step):
            plan = docker_task(plan_task_id(step.id), step.id,
                               "{{ mlproject_plan_command(ti, params, %r) }}" % step.id, "plan", do_xcom_push=True,
                               doc_md=f"plan of the {doc}: the parent and its SCHEDULED children")
            commands = task(task_id=f"{step.id}__children", dag=dag, retries=0)(child_commands)(plan.output)
            if settings.child_operator == "kubernetes":
                children = _pod_operator().partial(
                    task_id=f"{step.id}__train", dag=dag, name=f"{step.id}-child", pool=settings.pool,
                    **child_pod_arguments(settings, environment)).expand(arguments=commands)
            else:
                # A slot of the pool per child: Airflow 3 ignores max_active_tis_per_dag for mapped
                # tasks, and a pool is its tool for bounding how many run at once per resource.
                children = StepOperator.partial(
                    task_id=f"{step.id}__train", dag=dag, image=settings.image, do_xcom_push=False,
                    pool=settings.pool, **docker_arguments(step.id, "train")).expand(command=commands)
            aggregate = docker_task(step.id, step.id, "{{ mlproject_aggregate_command(ti, params, %r) }}" % step.id,
                                    "aggregate", do_xcom_push=True, trigger_rule="all_done",
                                    doc_md=f"aggregate of the {doc}: statistics, results, plots")
            plan >> commands >> children >> aggregate
            first[step.id], last[step.id] = plan, aggregate
            continue
        first[step.id] = last[step.id] = docker_task(
            step.id, step.id, "{{ mlproject_step_command(ti, params, %r) }}" % step.id, do_xcom_push=True,
            doc_md=doc)
    for step in pipeline.steps:
        for need in step.needs:
            if step.id in first and need in last:
                last[need] >> first[step.id]
    return dag


dag = build_dag(DagSettings.from_env())
