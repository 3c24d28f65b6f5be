"""A step's command and environment: the one builder that the local runner (`mlproject pipeline`)
and the Airflow DAG both call, so a step runs the same way in either.

A step is `mlflow run <project_dir> -e <entry point> ... -P k=v` (`step_command`); the DAG's
mapped form of a compare/ablation/ladder step runs its plan and aggregate stages as `mlproject`
commands instead (`sweep_stage_command`). A parameter `{{ steps.<id>.<key> }}` becomes the
upstream step's result value (`substitute`): the results are the `MLPROJECT_RESULT` lines the
steps printed (`mlproject.protocol`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from mlproject.errors import ConfigError, MlprojectError
from mlproject.orchestration.config import TEMPLATE, PipelineStep, param_text
from mlproject.orchestration.original_format import OriginalStep
from mlproject.protocol import hand_run_to

RESUMABLE = {"compare", "ablation", "ladder"}  # entry points that accept resume=true
SWEEP_COMMANDS = {"compare": "compare", "ablation": "ablate", "ladder": "ladder"}  # entry point -> CLI subcommand


def runs_in_rounds(step: PipelineStep) -> bool:
    """A compare/ablation step with `adaptive_seeds`: its seeds are decided look by look in one
    process (research.adaptive), so the DAG cannot plan its children up front; it runs as one
    task (`mlflow run -e compare`), and a retry resumes it at its last look."""
    return step.entry_point in RESUMABLE and step.parameters.get("adaptive_seeds") is not None


def substitute(value: str, upstream_results: Mapping[str, Mapping[str, Any]], step_id: str = "") -> str:
    """Replace `{{ steps.<id>.<key> }}` with the upstream step's result value."""

    def repl(match: re.Match[str]) -> str:
        ref, key = match.group(1), match.group(2)
        result = upstream_results.get(ref)
        if result is None or result.get(key) in (None, ""):
            raise MlprojectError(f"step {step_id}: parameter needs steps.{ref}.{key}, but step {ref} has no "
                                 f"such result (run step {ref} first)")
        return param_text(result[key])

    return TEMPLATE.sub(repl, value)


def step_command(step: PipelineStep, project_dir: str = ".",
                 upstream_results: Mapping[str, Mapping[str, Any]] | None = None, *,
                 resume: bool = False) -> list[str]:
    """`mlflow run <project_dir> -e <entry point> --env-manager local [--experiment-name X] -P k=v ...`.

    The one builder of a step's command: the pipeline runner and the Airflow DAG both call it.
    `resume` adds `-P resume=true` to compare/ablation steps. A step of an original pipeline
    is `mlproject <command> <its arguments>` instead (`original_format`).
    """
    if isinstance(step, OriginalStep):  # the original ran its script in its project root: so does this
        return ["mlproject", step.command, *step.argv, *(["--resume"] if resume and step.entry_point in RESUMABLE
                                                         else [])]
    cmd = ["mlflow", "run", str(project_dir), "-e", step.entry_point, "--env-manager", "local"]
    if step.experiment_name:
        cmd += ["--experiment-name", step.experiment_name]
    params = dict(step.parameters)
    if resume and step.entry_point in RESUMABLE:
        params["resume"] = True
    for key, value in params.items():
        if value is None:
            continue
        cmd += ["-P", f"{key}={substitute(param_text(value), upstream_results or {}, step.id)}"]
    return cmd


def sweep_stage_command(step: PipelineStep, stage: Literal["plan", "aggregate"],
                        upstream_results: Mapping[str, Mapping[str, Any]] | None = None, *,
                        parent_run_id: str | None = None, resume: bool = False) -> list[str]:
    """A compare/ablation step's plan or aggregate stage as an `mlproject` command (the child
    stage is `research.sweep.child_command`); the DAG's mapped form of the step runs these.

    Not `mlflow run`: it would end the parent run when the plan's process exits, while the
    children still train in other tasks. The parameters become the same flags `mlflow run`
    would pass (`--key value`), so both forms of a step train the same sweep.
    """
    if step.entry_point not in SWEEP_COMMANDS:
        raise ConfigError(f"step {step.id}: entry_point={step.entry_point!r} has no sweep stages; "
                          f"expected one of {', '.join(SWEEP_COMMANDS)}")
    cmd = ["mlproject", SWEEP_COMMANDS[step.entry_point]]
    if stage == "aggregate":
        if not parent_run_id:
            raise MlprojectError(f"step {step.id}: the aggregate stage needs the plan's parent run id")
        return cmd + ["--aggregate", parent_run_id]
    if isinstance(step, OriginalStep):  # its arguments name its experiment
        return cmd + [*step.argv, *(["--resume"] if resume else []), "--plan-only"]
    if step.experiment_name:
        cmd += ["--experiment-name", step.experiment_name]
    params = dict(step.parameters)
    if resume:  # a retried plan keeps the children it created before
        params["resume"] = True
    for key, value in params.items():
        if value is not None:
            cmd += [f"--{key}", substitute(param_text(value), upstream_results or {}, step.id)]
    return cmd + ["--plan-only"]


def step_env(base: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """A step's environment: without the pipeline's own MLflow run and experiment.

    `mlflow run` reads MLFLOW_RUN_ID as its --run-id: inherited from a pipeline that itself
    runs under `mlflow run`, every step would log into the pipeline's run (and MLFLOW_EXPERIMENT_ID
    would fight the step's --experiment-name).
    """
    env = hand_run_to(os.environ if base is None else base, None)
    env.update({str(k): param_text(v) for k, v in (extra or {}).items()})
    return env
