"""`mlproject pipeline`: the steps of a pipeline YAML, in dependency order, as `mlflow run` commands.

    pipeline: {name: research_small_repro_offline, experiment_name: gpt2_vs_gpt3_offline}
    steps:
      - id: compare
        entry_point: compare
        parameters: {config: configs/compare/gpt2_vs_gpt3_small_fair_offline.yaml}
      - id: plot_compare
        entry_point: plot
        needs: [compare]
        parameters: {parent_run_id: "{{ steps.compare.run_id }}"}

Each step runs exactly the command the Airflow DAG runs in a container (`step_command`), and
reports back through the last `MLPROJECT_RESULT {...}` line of its output (`parse_step_result`);
a later step's parameter `{{ steps.<id>.<key> }}` is replaced by that result's value (the plot
step plots the compare step's parent run). Both functions are shared with the DAG.

Every execution writes `<run_dir>/<name>-<timestamp>/report.json` (per step: command, status,
run id, times, return code, error tail) and logs it to the pipeline's run; `--resume` skips the
steps that succeeded in the newest report and re-runs the others, compare/ablation steps with
`resume=true` so their finished child runs are kept.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from mlproject.config import check_types, field, from_dict, load_yaml
from mlproject.errors import ConfigError, MlprojectError
from mlproject.io import atomic_write_text
from mlproject.protocol import hand_run_to, parse_step_result, process_run_id, result_line

RESUMABLE = {"compare", "ablation"}  # entry points that accept resume=true
_TEMPLATE = re.compile(r"\{\{\s*steps\.([A-Za-z0-9_\-]+)\.([A-Za-z0-9_]+)\s*\}\}")
_ID = re.compile(r"^[A-Za-z0-9_\-]+$")
_ERROR_TAIL_LINES = 40


@dataclass
class PipelineStep:
    """One step: an MLproject entry point with parameters, run after the steps it needs."""

    id: str = field(help="step id (letters, digits, _ and -)")
    entry_point: Literal["train", "compare", "ablation", "plot", "generate", "evaluate"] = field(
        help="MLproject entry point the step runs")
    needs: list[str] = field(default_factory=list, help="ids of steps that must succeed first")
    enabled: bool = field(True, help="false keeps the step in the file without running it")
    parameters: dict = field(default_factory=dict, help="-P key=value parameters; lists are space-joined; "
                                                        "'{{ steps.<id>.<key> }}' is an upstream step's result")
    experiment_name: str | None = field(None, help="MLflow experiment of the step (default: the pipeline's)")

    def validate(self) -> None:
        check_types(self, source=f"step {self.id}")
        if not _ID.match(self.id):
            raise ConfigError(f"step id {self.id!r} must contain only letters, digits, _ and -")

    def references(self) -> set[str]:
        """Ids of the steps whose results the parameters use."""
        return {m.group(1) for v in self.parameters.values() for m in _TEMPLATE.finditer(_text(v))}


@dataclass
class PipelineSettings:
    """The `pipeline:` section."""

    name: str = field(help="pipeline name (report folder prefix, pipeline run name)")
    experiment_name: str | None = field(None, help="default MLflow experiment of every step and of the pipeline run")
    run_dir: str = field("outputs/pipeline_runs", help="where execution reports are written")
    project_dir: str = field(".", help="MLflow project the steps run (`mlflow run <project_dir>`)")
    env: dict = field(default_factory=dict, help="extra environment variables of every step")

    def validate(self) -> None:
        check_types(self, source="pipeline")
        if not _ID.match(self.name):
            raise ConfigError(f"pipeline: name={self.name!r} must contain only letters, digits, _ and -")


@dataclass
class Pipeline:
    settings: PipelineSettings
    steps: list[PipelineStep]
    source: str = ""

    def step(self, step_id: str) -> PipelineStep:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise ConfigError(f"{self.source}: no step {step_id!r}; steps: {', '.join(s.id for s in self.steps)}")


@dataclass
class PipelineOptions:
    """Options of `mlproject pipeline` (the field names are its flags)."""

    step: list[str] = field(default_factory=list, repeat=True,
                            help="run only this step id (repeatable; or space-separated ids; default: every "
                                 "enabled step)")
    dry_run: bool = field(False, help="print the commands only")
    continue_on_error: bool = field(False, help="run independent steps after a failure")
    resume: bool = field(False, help="skip steps that finished in the last report")

    def validate(self) -> None:
        check_types(self, source="pipeline")


# ----------------------------------------------------------------------------- loading

def load_pipeline(path: str | os.PathLike[str]) -> Pipeline:
    """Read and validate a pipeline YAML: sections, step fields, unique ids, needs, cycles."""
    source = str(path)
    data = load_yaml(path)
    unknown = set(data) - {"pipeline", "steps"}
    if unknown:
        raise ConfigError(f"{source}: unknown section {sorted(unknown)[0]!r}; allowed sections: pipeline, steps")
    settings = from_dict(PipelineSettings, data.get("pipeline"), source=f"{source}: pipeline")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigError(f"{source}: steps must be a non-empty list of steps")
    steps = []
    for i, raw in enumerate(raw_steps):
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: steps[{i}] must be a mapping with id and entry_point")
        step = from_dict(PipelineStep, raw, source=f"{source}: steps[{i}]")
        if step.experiment_name is None:
            step.experiment_name = settings.experiment_name
        steps.append(step)
    pipeline = Pipeline(settings, steps, source)
    ids = [s.id for s in steps]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"{source}: step id {duplicates[0]!r} is used more than once")
    for step in steps:
        for need in step.needs:
            if need not in ids:
                raise ConfigError(f"{source}: step {step.id} needs unknown step {need!r}; steps: {', '.join(ids)}")
    order = execution_order(pipeline)
    for step in steps:
        ancestors = _ancestors(pipeline, step.id)
        for ref in sorted(step.references()):
            if ref not in ids:
                raise ConfigError(f"{source}: step {step.id} uses the result of unknown step {ref!r}")
            if ref not in ancestors:
                raise ConfigError(f"{source}: step {step.id} uses the result of step {ref} but does not need it; "
                                  f"add {ref} to its needs")
    pipeline.steps = order
    return pipeline


def execution_order(pipeline: Pipeline) -> list[PipelineStep]:
    """The steps in dependency order (file order among independent steps); a cycle is an error."""
    remaining = {s.id: set(s.needs) for s in pipeline.steps}
    order: list[PipelineStep] = []
    while remaining:
        ready = [s for s in pipeline.steps if s.id in remaining and not remaining[s.id]]
        if not ready:
            raise ConfigError(f"{pipeline.source}: steps {', '.join(sorted(remaining))} depend on each other in a cycle")
        for step in ready:
            order.append(step)
            del remaining[step.id]
            for needs in remaining.values():
                needs.discard(step.id)
    return order


def _ancestors(pipeline: Pipeline, step_id: str) -> set[str]:
    seen: set[str] = set()
    stack = list(pipeline.step(step_id).needs)
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(pipeline.step(current).needs)
    return seen


# ----------------------------------------------------------------------------- the shared command

def _text(value: Any) -> str:
    """A parameter value as `mlflow run -P` passes it: lists space-joined, booleans lower-case."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return " ".join(_text(v) for v in value)
    return str(value)


def substitute(value: str, upstream_results: Mapping[str, Mapping[str, Any]], step_id: str = "") -> str:
    """Replace `{{ steps.<id>.<key> }}` with the upstream step's result value."""

    def repl(match: re.Match[str]) -> str:
        ref, key = match.group(1), match.group(2)
        result = upstream_results.get(ref)
        if result is None or result.get(key) in (None, ""):
            raise MlprojectError(f"step {step_id}: parameter needs steps.{ref}.{key}, but step {ref} has no "
                                 f"such result (run step {ref} first)")
        return _text(result[key])

    return _TEMPLATE.sub(repl, value)


def step_command(step: PipelineStep, project_dir: str = ".",
                 upstream_results: Mapping[str, Mapping[str, Any]] | None = None, *,
                 resume: bool = False) -> list[str]:
    """`mlflow run <project_dir> -e <entry point> --env-manager local [--experiment-name X] -P k=v ...`.

    The one builder of a step's command: the pipeline runner and the Airflow DAG both call it.
    `resume` adds `-P resume=true` to compare/ablation steps.
    """
    cmd = ["mlflow", "run", str(project_dir), "-e", step.entry_point, "--env-manager", "local"]
    if step.experiment_name:
        cmd += ["--experiment-name", step.experiment_name]
    params = dict(step.parameters)
    if resume and step.entry_point in RESUMABLE:
        params["resume"] = True
    for key, value in params.items():
        if value is None:
            continue
        cmd += ["-P", f"{key}={substitute(_text(value), upstream_results or {}, step.id)}"]
    return cmd


SWEEP_COMMANDS = {"compare": "compare", "ablation": "ablate"}  # entry point -> CLI subcommand


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
    if step.experiment_name:
        cmd += ["--experiment-name", step.experiment_name]
    params = dict(step.parameters)
    if resume:  # a retried plan keeps the children it created before
        params["resume"] = True
    for key, value in params.items():
        if value is not None:
            cmd += [f"--{key}", substitute(_text(value), upstream_results or {}, step.id)]
    return cmd + ["--plan-only"]


def step_env(base: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """A step's environment: without the pipeline's own MLflow run and experiment.

    `mlflow run` reads MLFLOW_RUN_ID as its --run-id: inherited from a pipeline that itself
    runs under `mlflow run`, every step would log into the pipeline's run (and MLFLOW_EXPERIMENT_ID
    would fight the step's --experiment-name).
    """
    env = dict(hand_run_to(dict(os.environ if base is None else base), None))
    env.update({str(k): _text(v) for k, v in (extra or {}).items()})
    return env


# ----------------------------------------------------------------------------- running

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def previous_results(settings: PipelineSettings) -> dict[str, dict[str, Any]]:
    """Results of the steps whose latest recorded execution succeeded, over this pipeline's reports.

    Reports are read newest first; a step's newest succeeded or failed record decides (a step
    skipped in a later execution, e.g. not selected with --step, keeps its earlier result).
    """
    decided: dict[str, dict[str, Any] | None] = {}
    for path in sorted(Path(settings.run_dir).glob(f"{settings.name}-*/report.json"), reverse=True):
        try:
            steps = json.loads(path.read_text(encoding="utf-8")).get("steps", [])
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        for s in steps:
            if s.get("id") in decided or s.get("status") not in ("succeeded", "reused", "failed"):
                continue
            decided[s["id"]] = (s.get("result") or {}) if s["status"] != "failed" else None
    return {k: v for k, v in decided.items() if v is not None}


class _Report:
    """The execution report, rewritten atomically after every change."""

    def __init__(self, pipeline: Pipeline, path: Path, options: PipelineOptions) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "pipeline": pipeline.settings.name, "config": pipeline.source, "status": "running",
            "started_at": _now(), "ended_at": None, "run_dir": str(path.parent), "pipeline_run_id": None,
            "options": dataclasses.asdict(options),
            "steps": [{"id": s.id, "entry_point": s.entry_point, "needs": s.needs, "status": "pending",
                       "command": None, "run_id": None, "result": None, "started_at": None, "ended_at": None,
                       "duration_sec": None, "return_code": None, "error_tail": None, "reason": None, "log": None}
                      for s in pipeline.steps],
        }

    def step(self, step_id: str) -> dict[str, Any]:
        return next(s for s in self.data["steps"] if s["id"] == step_id)

    def update(self, step_id: str | None = None, **values: Any) -> None:
        (self.step(step_id) if step_id else self.data).update(values)
        atomic_write_text(self.path, json.dumps(self.data, indent=2) + "\n")


def run_pipeline(config_path: str | os.PathLike[str], options: PipelineOptions) -> int:
    """Run the pipeline; return 0 if every step that ran succeeded, else 1."""
    from mlproject.orchestration.project import localize

    pipeline = localize(load_pipeline(config_path))  # runs from any directory, not only the repo root
    selected = {s for item in options.step for s in item.replace(",", " ").split()}  # -P step="a b"
    for step_id in selected:
        pipeline.step(step_id)
    previous_ok = previous_results(pipeline.settings)

    plan: list[tuple[PipelineStep, str]] = []  # (step, run | reuse | not selected | disabled)
    for step in pipeline.steps:
        if selected and step.id not in selected:
            plan.append((step, "not selected"))
        elif not step.enabled and not selected:  # naming a disabled step with --step runs it
            plan.append((step, "disabled"))
        elif options.resume and step.id in previous_ok:
            plan.append((step, "reuse"))
        else:
            plan.append((step, "run"))

    if options.dry_run:
        return _dry_run(pipeline, plan, options)

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir = Path(pipeline.settings.run_dir) / f"{pipeline.settings.name}-{stamp}"
    report = _Report(pipeline, run_dir / "report.json", options)
    report.update()
    from mlproject.tracking import client
    from mlproject.tracking.queries import ROLE_TAG, absolute_tracking_uri

    created_run = process_run_id() is None
    run_id, _ = client.open_run(experiment=pipeline.settings.experiment_name, run_name=pipeline.settings.name,
                                 tags={ROLE_TAG: "pipeline", "mlproject.pipeline": pipeline.settings.name})
    report.update(pipeline_run_id=run_id)
    tracking_uri = absolute_tracking_uri()
    # This environment's `mlflow` and `mlproject` as a fallback when PATH has none (a venv
    # that was not activated); an explicit PATH entry still wins.
    path = os.pathsep.join([os.environ.get("PATH", ""), os.path.dirname(sys.executable)])
    env = step_env(extra={**pipeline.settings.env, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path})
    print(f"pipeline {pipeline.settings.name}: {sum(a == 'run' for _, a in plan)} step(s) to run; "
          f"report {report.path}; pipeline run {run_id}", flush=True)

    results: dict[str, dict[str, Any]] = dict(previous_ok)
    failed: set[str] = set()
    stopped = False
    t0 = time.monotonic()
    try:
        for step, action in plan:
            if action in ("not selected", "disabled"):
                report.update(step.id, status="skipped", reason=action)
                continue
            if action == "reuse":
                report.update(step.id, status="reused", result=previous_ok[step.id],
                              run_id=previous_ok[step.id].get("run_id"), reason="succeeded in an earlier execution")
                continue
            blocked = [n for n in step.needs if n in failed]
            if stopped or blocked:
                reason = "stopped after a failed step" if stopped else f"upstream step {blocked[0]} did not succeed"
                report.update(step.id, status="skipped", reason=reason)
                failed.add(step.id)
                continue
            ok = _run_step(step, pipeline, results, env, report, run_dir, resume=options.resume)
            if not ok:
                failed.add(step.id)
                stopped = not options.continue_on_error
    except KeyboardInterrupt:
        report.update(status="interrupted", ended_at=_now())
        _finish_run(run_id, report, "KILLED", created_run)
        raise
    status = "failed" if failed else "succeeded"
    report.update(status=status, ended_at=_now(), duration_sec=round(time.monotonic() - t0, 1))
    _finish_run(run_id, report, "FAILED" if failed else "FINISHED", created_run)
    _print_summary(pipeline, report, tracking_uri)
    print(result_line({"step": "pipeline", "run_id": run_id, "status": status,
                       "report": str(report.path.resolve())}), flush=True)
    return 1 if failed else 0


def _run_step(step: PipelineStep, pipeline: Pipeline, results: dict[str, dict[str, Any]], env: dict[str, str],
              report: _Report, run_dir: Path, *, resume: bool) -> bool:
    """Run one step, streaming its output to the console and its log; record it in the report."""
    started, t0 = _now(), time.monotonic()
    log_path = run_dir / f"{step.id}.log"
    try:
        cmd = step_command(step, pipeline.settings.project_dir, results, resume=resume)
    except MlprojectError as exc:
        report.update(step.id, status="failed", started_at=started, ended_at=_now(), error_tail=str(exc))
        print(f"[{step.id}] {exc}", flush=True)
        return False
    report.update(step.id, status="running", command=cmd, started_at=started, log=str(log_path))
    print(f"[{step.id}] $ {shlex.join(cmd)}", flush=True)
    tail: collections.deque[str] = collections.deque(maxlen=400)
    try:
        with log_path.open("w", encoding="utf-8") as log, subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1,
                errors="replace") as proc:
            from mlproject.secrets import scrub

            assert proc.stdout is not None
            for line in proc.stdout:
                line = scrub(line)  # the step log is logged to the pipeline run
                sys.stdout.write(line)
                log.write(line)
                tail.append(line)
            rc = proc.wait()
    except OSError as exc:  # e.g. `mlflow` not on PATH
        report.update(step.id, status="failed", ended_at=_now(), return_code=None, error_tail=str(exc))
        print(f"[{step.id}] could not start: {exc}", flush=True)
        return False
    except KeyboardInterrupt:
        report.update(step.id, status="failed", ended_at=_now(), reason="interrupted")
        raise
    output = "".join(tail)
    result = parse_step_result(output) if rc == 0 else None
    ok = rc == 0
    fields: dict[str, Any] = {"ended_at": _now(), "duration_sec": round(time.monotonic() - t0, 1), "return_code": rc}
    if ok:
        results[step.id] = result or {}
        fields.update(status="succeeded", result=result, run_id=(result or {}).get("run_id"))
    else:
        fields.update(status="failed", error_tail="".join(list(tail)[-_ERROR_TAIL_LINES:]))
    report.update(step.id, **fields)
    print(f"[{step.id}] {fields['status']} (exit code {rc}, {fields['duration_sec']} s)", flush=True)
    return ok


def _finish_run(run_id: str, report: _Report, status: str, created: bool) -> None:
    """Log the report (and step logs) to the pipeline run; end the run if this process created it."""
    from mlproject.tracking import client

    tags = {f"mlproject.step.{s['id']}.status": s["status"] for s in report.data["steps"]}
    tags.update({f"mlproject.step.{s['id']}.run_id": s["run_id"] for s in report.data["steps"] if s["run_id"]})
    client.set_tags(run_id, tags)
    from mlproject.research.describe import pipeline_note
    from mlproject.tracking.client import describe_run

    describe_run(run_id, name=report.data["pipeline"],
                 note=pipeline_note(report.data["pipeline"], status, report.data["steps"]))
    logs = [Path(s["log"]) for s in report.data["steps"] if s["log"] and Path(s["log"]).is_file()]
    client.log_files(run_id, [report.path])
    if logs:
        client.log_files(run_id, logs, "logs")
    if created:
        client.set_status(run_id, status)


def _dry_run(pipeline: Pipeline, plan: Sequence[tuple[PipelineStep, str]], options: PipelineOptions) -> int:
    """Print what would run (upstream results as `<steps.id.key>` placeholders); run nothing."""

    class Placeholder(dict):
        def __init__(self, step_id: str) -> None:
            super().__init__()
            self.step_id = step_id

        def get(self, key: str, default: Any = None) -> str:
            return f"<steps.{self.step_id}.{key}>"

        def __getitem__(self, key: str) -> str:
            return self.get(key)

    upstream = {s.id: Placeholder(s.id) for s in pipeline.steps}
    print(f"pipeline {pipeline.settings.name} (dry run: nothing is executed)")
    for step, action in plan:
        if action != "run":
            print(f"# {step.id}: skipped ({action})")
            continue
        cmd = step_command(step, pipeline.settings.project_dir, upstream, resume=options.resume)
        print(f"# {step.id}" + (f" (after {', '.join(step.needs)})" if step.needs else ""))
        print(shlex.join(cmd))
    return 0


def _print_summary(pipeline: Pipeline, report: _Report, tracking_uri: str) -> None:
    """Per step: status, run, experiment and plots; then where to browse them."""
    from mlproject.secrets import scrub

    data = report.data
    print(f"\npipeline {pipeline.settings.name}: {data['status']} ({data.get('duration_sec', 0)} s)")
    for s in data["steps"]:
        result = s.get("result") or {}
        line = f"  {s['id']:<16} {s['status']:<10}"
        if s.get("run_id"):
            line += f" run {s['run_id']}"
        if result.get("experiment_name"):
            line += f"  experiment {result['experiment_name']!r}"
        if s.get("reason"):
            line += f"  ({s['reason']})"
        print(line)
        for plot in result.get("plots", []):
            print(f"      plot: {plot}")
        if result.get("model_uri"):
            print(f"      model: {result['model_uri']}")
            print("      predict: python -c \"import mlflow; print(mlflow.pyfunc.load_model("
                  f"'{result['model_uri']}').predict(['The module'], params={{'max_new_tokens': 20}}))\"")
    print(f"report: {report.path.resolve()}")
    print(f"browse: mlflow ui --backend-store-uri {scrub(tracking_uri)}", flush=True)
