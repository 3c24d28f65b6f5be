"""`mlproject pipeline`: the steps of a pipeline YAML, run here in dependency order.

Each step runs exactly the command the Airflow DAG runs in a container (`steps.step_command`),
and reports back through the last `MLPROJECT_RESULT {...}` line of its output
(`protocol.parse_step_result`); a later step's parameter `{{ steps.<id>.<key> }}` is replaced by
that result's value (the plot step plots the compare step's parent run).

Every execution writes `<run_dir>/<name>-<timestamp>/report.json` (per step: command, status,
run id, times, return code, error tail) and logs it to the pipeline's run; `--resume` skips the
steps that succeeded in the newest report and re-runs the others, compare/ablation steps with
`resume=true` so their finished child runs are kept.
"""

from __future__ import annotations

import collections
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlproject.errors import MlprojectError
from mlproject.io import atomic_write_text
from mlproject.orchestration.config import Pipeline, PipelineOptions, PipelineSettings, PipelineStep
from mlproject.orchestration.graph import load_pipeline
from mlproject.orchestration.original_format import KnownFlags, original_results, write_original_report
from mlproject.orchestration.project import localize
from mlproject.orchestration.steps import step_command, step_env
from mlproject.protocol import parse_step_result, process_run_id, result_line
from mlproject.schema import Artifact, RunRole, RunStatus, StepStatus, Tag, step_run_id_tag, step_status_tag
from mlproject.secrets import scrub

_ERROR_TAIL_LINES = 40
_DECIDED = (StepStatus.SUCCEEDED, StepStatus.REUSED, StepStatus.FAILED)  # a resumed pipeline keeps these


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def previous_results(settings: PipelineSettings) -> dict[str, dict[str, Any]]:
    """Results of the steps whose latest recorded execution succeeded, over this pipeline's reports.

    Reports are read newest first; a step's newest succeeded or failed record decides (a step
    skipped in a later execution, e.g. not selected with --step, keeps its earlier result).
    """
    decided: dict[str, dict[str, Any] | None] = {}
    reports = [path for folder in settings.reports_dirs() for path in folder.glob(f"{settings.name}-*/report.json")]
    for path in sorted(reports, key=lambda p: p.parent.name, reverse=True):  # <name>-<stamp>: newest first
        try:
            steps = json.loads(path.read_text(encoding="utf-8")).get("steps", [])
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        for s in steps:
            if s.get("id") in decided or s.get("status") not in _DECIDED:
                continue
            decided[s["id"]] = (s.get("result") or {}) if s["status"] != StepStatus.FAILED else None
    return {k: v for k, v in decided.items() if v is not None}


class _Report:
    """The execution report, rewritten atomically after every change."""

    def __init__(self, pipeline: Pipeline, path: Path, options: PipelineOptions) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "pipeline": pipeline.settings.name, "config": pipeline.source, "status": StepStatus.RUNNING,
            "started_at": _now(), "ended_at": None, "run_dir": str(path.parent), "pipeline_run_id": None,
            # `steps`, not the flag's `step`: the key every earlier report has
            "options": {"steps": list(options.step), "dry_run": options.dry_run,
                        "continue_on_error": options.continue_on_error, "resume": options.resume},
            "steps": [{"id": s.id, "entry_point": s.entry_point, "needs": s.needs, "status": StepStatus.PENDING,
                       "command": None, "run_id": None, "result": None, "started_at": None, "ended_at": None,
                       "duration_sec": None, "return_code": None, "error_tail": None, "reason": None, "log": None}
                      for s in pipeline.steps],
        }

    def step(self, step_id: str) -> dict[str, Any]:
        return next(s for s in self.data["steps"] if s["id"] == step_id)

    def update(self, step_id: str | None = None, **values: Any) -> None:
        (self.step(step_id) if step_id else self.data).update(values)
        atomic_write_text(self.path, json.dumps(self.data, indent=2) + "\n")


def run_pipeline(options: PipelineOptions, known_flags: KnownFlags | None = None) -> int:
    """Run the pipeline `options.config`; return 0 if every step that ran succeeded, else 1.

    `known_flags` checks the args of an original-format pipeline's steps before any step runs."""
    pipeline = localize(load_pipeline(options.config, known_flags))  # runs from any directory, not only the repo root
    selected = options.selected_steps()
    for step_id in selected:
        pipeline.step(step_id)
    previous_ok = previous_results(pipeline.settings)
    plan = _plan(pipeline, selected, previous_ok, resume=options.resume)
    if options.dry_run:
        return _dry_run(pipeline, plan, options)

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir = pipeline.settings.reports_dirs()[0] / f"{pipeline.settings.name}-{stamp}"
    report = _Report(pipeline, run_dir / "report.json", options)
    report.update()
    # Imported only now: a dry run (and a bad pipeline file) never loads MLflow.
    from mlproject.tracking import client
    from mlproject.tracking.queries import absolute_tracking_uri

    created_run = process_run_id() is None
    run_id, _ = client.open_run(experiment=pipeline.settings.experiment_name, run_name=pipeline.settings.name,
                                 tags={Tag.ROLE: RunRole.PIPELINE, Tag.PIPELINE: pipeline.settings.name})
    report.update(pipeline_run_id=run_id)
    tracking_uri = absolute_tracking_uri()
    # This environment's `mlflow` and `mlproject` as a fallback when PATH has none (a venv
    # that was not activated); an explicit PATH entry still wins.
    path = os.pathsep.join([os.environ.get("PATH", ""), os.path.dirname(sys.executable)])
    env = step_env(extra={**pipeline.settings.env, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path})
    print(f"pipeline {pipeline.settings.name}: {sum(a == 'run' for _, a in plan)} step(s) to run; "
          f"report {report.path}; pipeline run {run_id}", flush=True)

    t0 = time.monotonic()
    try:
        failed = _run_plan(plan, pipeline, previous_ok, env, report, run_dir, options)
    except KeyboardInterrupt:
        report.update(status=StepStatus.INTERRUPTED, ended_at=_now())
        _finish_run(run_id, report, RunStatus.KILLED, created_run)
        raise
    status = StepStatus.FAILED if failed else StepStatus.SUCCEEDED
    report.update(status=status, ended_at=_now(), duration_sec=round(time.monotonic() - t0, 1))
    _write_original_report(pipeline, report.data["steps"], dry_run=False)
    _finish_run(run_id, report, RunStatus.FAILED if failed else RunStatus.FINISHED, created_run)
    _print_summary(pipeline, report, tracking_uri)
    print(result_line({"step": "pipeline", "run_id": run_id, "status": status,
                       "report": str(report.path.resolve())}), flush=True)
    return 1 if failed else 0


def _plan(pipeline: Pipeline, selected: Sequence[str], previous_ok: Mapping[str, Any], *,
          resume: bool) -> list[tuple[PipelineStep, str]]:
    """Each step with what this execution does with it: run, reuse, not selected or disabled."""
    plan: list[tuple[PipelineStep, str]] = []
    for step in pipeline.steps:
        if selected and step.id not in selected:
            plan.append((step, "not selected"))
        elif not step.enabled and not selected:  # naming a disabled step with --step runs it
            plan.append((step, "disabled"))
        elif resume and step.id in previous_ok:
            plan.append((step, "reuse"))
        else:
            plan.append((step, "run"))
    return plan


def _run_plan(plan: Sequence[tuple[PipelineStep, str]], pipeline: Pipeline, previous_ok: Mapping[str, Any],
              env: dict[str, str], report: _Report, run_dir: Path, options: PipelineOptions) -> set[str]:
    """Run the plan's steps in order, recording each in the report; the ids of those that did not succeed.

    A step whose upstream step did not succeed is skipped (and counts as not succeeded); after
    a failure the rest are skipped unless `options.continue_on_error`."""
    results: dict[str, dict[str, Any]] = dict(previous_ok)
    failed: set[str] = set()
    stopped = False
    for step, action in plan:
        if action in ("not selected", "disabled"):
            report.update(step.id, status=StepStatus.SKIPPED, reason=action)
            continue
        if action == "reuse":
            report.update(step.id, status=StepStatus.REUSED, result=previous_ok[step.id],
                          run_id=previous_ok[step.id].get("run_id"), reason="succeeded in an earlier execution")
            continue
        blocked = [n for n in step.blocking_needs() if n in failed]
        if stopped or blocked:
            reason = "stopped after a failed step" if stopped else f"upstream step {blocked[0]} did not succeed"
            report.update(step.id, status=StepStatus.SKIPPED, reason=reason)
            failed.add(step.id)
            continue
        if not _run_step(step, pipeline, results, env, report, run_dir, resume=options.resume):
            failed.add(step.id)
            stopped = not options.continue_on_error
    return failed


def _run_step(step: PipelineStep, pipeline: Pipeline, results: dict[str, dict[str, Any]], env: dict[str, str],
              report: _Report, run_dir: Path, *, resume: bool) -> bool:
    """Run one step, streaming its output to the console and its log; record it in the report."""
    started, t0 = _now(), time.monotonic()
    log_path = run_dir / f"{step.id}.log"
    try:
        cmd = step_command(step, pipeline.settings.project_dir, results, resume=resume)
        _check_config_file(step.id, cmd)
    except MlprojectError as exc:
        report.update(step.id, status=StepStatus.FAILED, started_at=started, ended_at=_now(), error_tail=str(exc))
        print(f"[{step.id}] {exc}", flush=True)
        return False
    report.update(step.id, status=StepStatus.RUNNING, command=cmd, started_at=started, log=str(log_path))
    print(f"[{step.id}] $ {shlex.join(cmd)}", flush=True)
    tail: collections.deque[str] = collections.deque(maxlen=400)
    try:
        with log_path.open("w", encoding="utf-8") as log, subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1,
                errors="replace", cwd=pipeline.original.project_root if pipeline.original else None) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = scrub(line)  # the step log is logged to the pipeline run
                sys.stdout.write(line)
                log.write(line)
                tail.append(line)
            rc = proc.wait()
    except OSError as exc:  # e.g. `mlflow` not on PATH
        report.update(step.id, status=StepStatus.FAILED, ended_at=_now(), return_code=None, error_tail=str(exc))
        print(f"[{step.id}] could not start: {exc}", flush=True)
        return False
    except KeyboardInterrupt:
        report.update(step.id, status=StepStatus.FAILED, ended_at=_now(), reason="interrupted")
        raise
    output = "".join(tail)
    result = parse_step_result(output) if rc == 0 else None
    ok = rc == 0
    fields: dict[str, Any] = {"ended_at": _now(), "duration_sec": round(time.monotonic() - t0, 1), "return_code": rc}
    if ok:
        results[step.id] = result or {}
        fields.update(status=StepStatus.SUCCEEDED, result=result, run_id=(result or {}).get("run_id"))
    else:
        fields.update(status=StepStatus.FAILED, error_tail="".join(list(tail)[-_ERROR_TAIL_LINES:]))
    report.update(step.id, **fields)
    print(f"[{step.id}] {fields['status']} (exit code {rc}, {fields['duration_sec']} s)", flush=True)
    return ok


def _check_config_file(step_id: str, cmd: Sequence[str]) -> None:
    """Refuse a step whose `config` parameter names no file, before `mlflow run` starts.

    `mlflow run` creates the step's run and only then checks its path parameters: a missing
    config left that run RUNNING forever, with no process to end it."""
    for flag, value in zip(cmd, cmd[1:]):
        if flag == "-P" and value.startswith("config="):
            path = value.removeprefix("config=")
            if "://" not in path and not Path(path).expanduser().is_file():
                raise MlprojectError(f"step {step_id}: config={path!r} is not a file; expected the path of the "
                                     "step's YAML config (the step was not started, no run was created)")


def _finish_run(run_id: str, report: _Report, status: str, created: bool) -> None:
    """Log the report (and step logs) to the pipeline run; end the run if this process created it."""
    from mlproject.tracking import client

    tags = {step_status_tag(s['id']): s["status"] for s in report.data["steps"]}
    tags.update({step_run_id_tag(s['id']): s["run_id"] for s in report.data["steps"] if s["run_id"]})
    client.set_tags(run_id, tags)
    from mlproject.research.describe import pipeline_note
    from mlproject.tracking.client import describe_run

    describe_run(run_id, name=report.data["pipeline"],
                 note=pipeline_note(report.data["pipeline"], status, report.data["steps"]))
    logs = [Path(s["log"]) for s in report.data["steps"] if s["log"] and Path(s["log"]).is_file()]
    client.log_files(run_id, [report.path])
    if logs:
        client.log_files(run_id, logs, Artifact.LOGS)
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
    printed = []
    for step, action in plan:
        if action != "run":
            print(f"# {step.id}: skipped ({action})")
            printed.append({"id": step.id, "status": StepStatus.SKIPPED, "reason": action})
            continue
        cmd = step_command(step, pipeline.settings.project_dir, upstream, resume=options.resume)
        print(f"# {step.id}" + (f" (after {', '.join(step.needs)})" if step.needs else ""))
        print(shlex.join(cmd))
        printed.append({"id": step.id, "status": "dry_run", "command": cmd, "return_code": 0,
                        "started_at": _now(), "ended_at": _now()})
    _write_original_report(pipeline, printed, dry_run=True)
    return 0


def _write_original_report(pipeline: Pipeline, steps: Sequence[Mapping[str, Any]], *, dry_run: bool) -> None:
    """An original-format pipeline's own report (`execution_<UTC stamp>.json`), beside the suite's."""
    if pipeline.original is not None:
        path = write_original_report(pipeline.original, original_results(steps), dry_run)
        print(f"original report: {path}", flush=True)


# the steps whose run `mlproject reproduce` re-makes: a training run or a sweep parent
REPRODUCIBLE_ENTRY_POINTS = frozenset({"train", "compare", "ablation"})


def _print_summary(pipeline: Pipeline, report: _Report, tracking_uri: str) -> None:
    """Per step: status, run, experiment and plots; then where to browse them."""
    from mlproject.tracking.best_model import predict_command

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
        for line in result.get("power", []):  # a sweep: what its seeds could detect
            print(f"      power: {line}")
        if result.get("best_alias"):
            print(f"      alias best: {result['best_alias']}")
        for plot in result.get("plots", []):
            print(f"      plot: {plot}")
        if result.get("model_uri"):
            print(f"      model: {result['model_uri']}")
            print(f"      predict: {predict_command(result['model_uri'])}")
        if s.get("run_id") and s.get("entry_point") in REPRODUCIBLE_ENTRY_POINTS and s["status"] == "succeeded":
            print(f"      reproduce: mlproject reproduce --run-id {s['run_id']}")
    print(f"report: {report.path.resolve()}")
    print(f"browse: mlflow ui --backend-store-uri {scrub(tracking_uri)}", flush=True)
