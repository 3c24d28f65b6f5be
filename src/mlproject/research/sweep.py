"""The sweep engine behind compare and ablation: one parent run, one child run per group x seed.

A job (research/compare.py, research/ablation.py) turns its config into a `SweepSpec`: the
groups (model versions or axis values, baseline first), one fully resolved `RunConfig` per
child, and a sweep key. Everything else is shared and lives here:

- every child config is validated before the parent or any child run exists;
- the parent is the run `mlflow run` created (`MLFLOW_RUN_ID`) or a new one; children are
  created up front (SCHEDULED, nested) and trained one by one in this process
  (`run_training(..., run_id=child)`) or `parallel` at a time as `mlproject train`
  subprocesses, after the data cache is prepared once;
- `resume` picks up the newest parent with the same sweep key: FINISHED children are kept,
  unfinished ones continue from their last checkpoint, missing ones are added;
- the parent gets per-group statistics (mean, std, 95% t CI, n), paired comparisons against
  the baseline, `results.jsonl`/`results.csv`, and a final `MLPROJECT_RESULT` line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlproject.config import build_sections, dump_yaml, flatten, load_yaml, to_dict
from mlproject.errors import ConfigError, MlprojectError
from mlproject.research.pipeline import result_line
from mlproject.research.results import (
    SUMMARY_COLUMNS,
    Row,
    SweepStats,
    aggregate,
    format_summary,
    make_row,
    metric_key,
    stats_to_metrics,
    write_results,
)
from mlproject.tracking.config import RunConfig

# Fields that change how fast a run goes, not what it computes: left out of the sweep key, so
# a sweep resumed on another machine (or with --parallel) still matches its children.
RUNTIME_FIELDS = {"train.device", "train.num_threads", "train.progress", "train.peak_flops",
                  "data.num_workers", "data.cache_dir"}


@dataclass
class ChildSpec:
    """One child run: its group (model version or axis value), seed and resolved config."""

    group: str
    seed: int
    cfg: RunConfig
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.group}-s{self.seed}"


@dataclass
class SweepSpec:
    """What a compare or ablation job runs; built and validated before any run is created."""

    kind: str                   # compare | ablation
    run_name: str               # parent run name
    experiment: str             # experiment of the parent (unless `mlflow run` chose one)
    key: str                    # sweep key: matches the children of an interrupted sweep
    groups: list[str]           # baseline first
    metrics: list[str]          # child summary metrics aggregated on the parent
    children: list[ChildSpec]
    base: RunConfig             # the shared config (its data section is prepared once)
    params: dict[str, Any]      # logged on the parent
    config_text: str            # the job's resolved YAML, logged as sweep.yaml
    parallel: int = 1
    resume: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    eval_datasets: list[str] = field(default_factory=list)  # evaluated after training (research.eval_metrics)


@dataclass
class SweepOutcome:
    parent_run_id: str
    experiment_id: str
    experiment_name: str
    status: str                 # FINISHED | FAILED | KILLED
    rows: list[Row]
    stats: SweepStats
    results_dir: Path


# ----------------------------------------------------------------------------- job helpers

def load_job(yaml_path: str | os.PathLike[str] | None, args: Any, section: str, cls: type,
             extra_keys: Sequence[str] = ()) -> tuple[RunConfig, Any, dict[str, Any]]:
    """RunConfig sections + the job's own section from YAML and flags, plus raw `extra_keys`."""
    data = load_yaml(yaml_path) if yaml_path else {}
    extras = {k: data.pop(k) for k in extra_keys if k in data}
    sections = build_sections({**RunConfig.SECTIONS, section: cls}, yaml_path=yaml_path, args=args, data=data)
    job = sections.pop(section)
    return RunConfig(**sections), job, extras


def sweep_key(kind: str, base: RunConfig, drop: Sequence[str], extra: Mapping[str, Any]) -> str:
    """Hash of what makes two sweeps the same: the config minus seeds, the varied field,
    runtime-only fields and the tracking section (names, folders), plus job settings."""
    fields = {k: v for name in ("model", "data", "train") for k, v in flatten(getattr(base, name), name).items()}
    ignored = RUNTIME_FIELDS | {"train.seed", "train.data_seed", *drop}
    payload = {"kind": kind, "config": {k: v for k, v in fields.items() if k not in ignored}, **extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def child_config(base: RunConfig, *, model: Any, train: Any, seed: int) -> RunConfig:
    """A child's RunConfig: its model and train sections with `seed` for init and data order."""
    # The data order follows the seed, not the model: for a given seed every group sees the
    # same batches, so the paired comparison across seeds cancels data-order noise.
    data_seed = train.data_seed if train.data_seed is not None else seed
    return RunConfig(model=model, data=base.data, train=dataclasses.replace(train, seed=seed, data_seed=data_seed),
                     tracking=dataclasses.replace(base.tracking))


def with_context(where: str, exc: ConfigError) -> ConfigError:
    """`exc` prefixed with `where` unless its message already starts with the file name."""
    message = str(exc)
    return ConfigError(message if message.startswith(where.split(":")[0]) else f"{where}: {message}")


def experiment_for(base: RunConfig) -> str:
    from mlproject.tracking.runs import default_experiment_name

    return base.tracking.experiment_name or default_experiment_name(base.data.dataset)


# ----------------------------------------------------------------------------- rows

def row_from_run(record: Any, metrics: Sequence[str] = ()) -> Row:
    """A results row from a child run in the tracking store (tags say its group and seed)."""
    from mlproject.tracking.artifacts import CHECKPOINT_DIR, checkpoint_uri
    from mlproject.tracking.queries import (AXIS_TAG, GROUP_TAG, MODEL_TAG, SEED_TAG, VALUE_TAG,
                                            artifact_files)

    tags = record.tags
    present = {p.rsplit("/", 1)[-1] for p in artifact_files(record.run_id, CHECKPOINT_DIR)}
    uris = {kind: checkpoint_uri(record.run_id, kind) for kind in ("last", "best") if f"{kind}.pt" in present}
    names = list(dict.fromkeys([*SUMMARY_COLUMNS, *metrics]))
    return make_row(run_id=record.run_id, status=record.status, group=tags.get(GROUP_TAG, ""),
                    model_version=tags.get(MODEL_TAG, ""), seed=int(tags.get(SEED_TAG, -1)),
                    summary={k: record.metrics[k] for k in names if k in record.metrics},
                    checkpoint_uris=uris, axis=tags.get(AXIS_TAG, ""), value=tags.get(VALUE_TAG, ""))


# ----------------------------------------------------------------------------- the engine

@dataclass
class _Task:
    child: ChildSpec
    run_id: str
    action: str   # done | new | resume | restart


def run_sweep(spec: SweepSpec) -> SweepOutcome:
    """Run (or resume) the sweep; print the summary table and the MLPROJECT_RESULT line.

    Raises MlprojectError after reporting when some children did not finish, and
    KeyboardInterrupt (parent KILLED) when interrupted.
    """
    from mlproject.tracking import sweeps
    from mlproject.tracking.queries import GROUPS_TAG, METRICS_TAG, get_run

    parent = sweeps.open_parent(
        experiment=spec.experiment, run_name=spec.run_name, kind=spec.kind, sweep_key=spec.key,
        resume=spec.resume, tags={GROUPS_TAG: json.dumps(spec.groups), METRICS_TAG: json.dumps(spec.metrics),
                                  **spec.tags})
    print(f"{spec.kind}: parent run {parent.run_id} in experiment {parent.experiment_name!r} "
          f"(id {parent.experiment_id})", flush=True)
    try:
        sweeps.log_params_once(parent.run_id, spec.params)
        tasks = _plan(spec, parent)
        _print_plan(spec, tasks)
        todo = [t for t in tasks if t.action != "done"]
        if todo:
            _prepare_data(spec.base)
            if spec.parallel > 1 and len(todo) > 1:
                _run_parallel(todo, spec.parallel, parent)
            else:
                _run_sequential(todo, parent)
        if spec.eval_datasets:
            from mlproject.research.eval_metrics import evaluate_children

            evaluate_children([t.run_id for t in tasks], spec.eval_datasets, cache_dir=spec.base.data.cache_dir,
                              device=spec.base.train.device)
    except BaseException as exc:
        sweeps.set_status(parent.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise

    rows = [row_from_run(get_run(t.run_id), spec.metrics) for t in tasks]
    stats = aggregate(rows, spec.groups, spec.metrics)
    status = "FINISHED" if all(r["status"] == "FINISHED" for r in rows) else "FAILED"
    results_dir = _record_results(spec, parent, rows, stats)
    sweeps.set_status(parent.run_id, status)

    print(format_summary(stats, rows))
    print(f"results: {results_dir / 'results.jsonl'} (logged to run {parent.run_id})")
    print(result_line({"step": spec.kind, "run_id": parent.run_id, "experiment_id": parent.experiment_id,
                       "experiment_name": parent.experiment_name, "status": status, "children": len(rows),
                       "finished": sum(r["status"] == "FINISHED" for r in rows)}), flush=True)
    if status != "FINISHED":
        failed = [f"{t.child.name} ({r['status']})" for t, r in zip(tasks, rows) if r["status"] != "FINISHED"]
        raise MlprojectError(f"{spec.kind}: {len(failed)} of {len(rows)} child runs did not finish: "
                             f"{', '.join(failed)}; re-run with --resume to complete them")
    return SweepOutcome(parent.run_id, parent.experiment_id, parent.experiment_name, status, rows, stats,
                        results_dir)


def _plan(spec: SweepSpec, parent: Any) -> list[_Task]:
    """Match children to existing runs (with resume) and create the missing ones."""
    from mlproject.tracking import sweeps
    from mlproject.tracking.artifacts import CHECKPOINT_DIR
    from mlproject.tracking.queries import GROUP_TAG, KEY_TAG, PARENT_TAG, SEED_TAG, artifact_files, sweep_cells

    existing = sweep_cells(parent.previous, spec.key) if spec.resume and parent.previous is not None else {}
    tasks = []
    for child in spec.children:
        run = existing.get((child.group, child.seed))
        if run is None:
            tags = {**child.tags, GROUP_TAG: child.group, SEED_TAG: str(child.seed), KEY_TAG: spec.key}
            tasks.append(_Task(child, sweeps.create_child(parent, run_name=child.name, tags=tags), "new"))
            continue
        if run.tags.get(PARENT_TAG) != parent.run_id:
            sweeps.adopt_child(run.run_id, parent.run_id)
        if run.status == "FINISHED":
            action = "done"
        elif run.status == "SCHEDULED":  # created by the interrupted sweep, never started
            action = "new"
        elif f"{CHECKPOINT_DIR}/last.pt" in artifact_files(run.run_id, CHECKPOINT_DIR):
            action = "resume"
        else:  # never got to its first checkpoint: train it again in the same run
            action = "restart"
        tasks.append(_Task(child, run.run_id, action))
    return tasks


def _print_plan(spec: SweepSpec, tasks: Sequence[_Task]) -> None:
    counts = {a: sum(t.action == a for t in tasks) for a in ("done", "resume", "restart", "new")}
    parts = [f"{n} {label}" for label, n in (("finished", counts["done"]), ("to resume", counts["resume"]),
                                             ("to restart", counts["restart"]), ("new", counts["new"])) if n]
    print(f"{spec.kind}: {len(tasks)} child runs ({', '.join(parts)}): "
          f"{len(spec.groups)} groups x {len({c.seed for c in spec.children})} seeds", flush=True)


def _task_config(task: _Task, parent: Any) -> RunConfig:
    cfg = task.child.cfg
    tracking = dataclasses.replace(cfg.tracking, experiment_name=parent.experiment_name, run_name=task.child.name,
                                   resume_from=task.run_id if task.action == "resume" else None)
    return dataclasses.replace(cfg, tracking=tracking)


def _prepare_data(base: RunConfig) -> None:
    """Build the tokenizer and token caches once, before any child (children then reuse them)."""
    from mlproject.data.prepare import prepare_data

    prepare_data(base.data)


def _run_sequential(tasks: Sequence[_Task], parent: Any) -> None:
    from mlproject.tracking import sweeps
    from mlproject.tracking.train_run import run_training

    for i, task in enumerate(tasks, 1):
        print(f"--- child {i}/{len(tasks)}: {task.child.name} ({task.action}) run {task.run_id}", flush=True)
        try:
            outcome = run_training(_task_config(task, parent), parent_run_id=parent.run_id, run_id=task.run_id)
        except Exception as exc:  # the run is FAILED with its error tag; the other children still run
            print(f"child {task.child.name} failed: {type(exc).__name__}: {exc}".splitlines()[0], flush=True)
            sweeps.fail_if_unfinished(task.run_id)
            continue
        if outcome.status == "KILLED":  # the trainer stopped on SIGTERM: stop the sweep too
            raise KeyboardInterrupt(f"child {task.child.name} was interrupted")


class _ChildProcess:
    """One `mlproject train` process; its output goes to a log file and, prefixed, to stdout."""

    def __init__(self, task: _Task, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.task, self.log = task, log
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", env=env)
        self._pump = threading.Thread(target=self._copy, daemon=True)
        self._pump.start()

    def _copy(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("w", encoding="utf-8") as out:
            for line in self.proc.stdout:
                out.write(line)
                print(f"[{self.task.child.name}] {line}", end="", flush=True)

    def done(self) -> bool:
        if self.proc.poll() is None:
            return False
        self._pump.join()
        return True


def _run_parallel(tasks: Sequence[_Task], parallel: int, parent: Any) -> None:
    """`parallel` children at a time as `mlproject train` processes joined to their runs."""
    from mlproject.tracking import sweeps
    from mlproject.tracking.queries import absolute_tracking_uri

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // parallel)
    base_env = {**os.environ, "MLFLOW_TRACKING_URI": absolute_tracking_uri(),
                "MLFLOW_EXPERIMENT_ID": parent.experiment_id, "OMP_NUM_THREADS": str(threads)}
    print(f"running {len(tasks)} children, {parallel} at a time with {threads} torch thread(s) each", flush=True)
    pending = list(tasks)
    running: list[_ChildProcess] = []
    with tempfile.TemporaryDirectory(prefix="mlproject-sweep-") as tmp:
        try:
            while pending or running:
                while pending and len(running) < parallel:
                    task = pending.pop(0)
                    folder = Path(tmp) / task.child.name
                    folder.mkdir()
                    config = folder / "config.yaml"
                    config.write_text(dump_yaml(to_dict(_task_config(task, parent))), encoding="utf-8")
                    cmd = [sys.executable, "-m", "mlproject", "train", "--config", str(config),
                           "--num-threads", str(threads), "--progress", "lines"]
                    running.append(_ChildProcess(task, cmd, {**base_env, "MLFLOW_RUN_ID": task.run_id},
                                                 folder / "train.log"))
                    print(f"started {task.child.name} ({task.action}) run {task.run_id}", flush=True)
                for child in [c for c in running if c.done()]:
                    running.remove(child)
                    status = sweeps.fail_if_unfinished(child.task.run_id)
                    sweeps.log_files(child.task.run_id, [child.log], "logs")
                    print(f"finished {child.task.child.name}: {status} (exit code {child.proc.returncode})",
                          flush=True)
                time.sleep(0.2)
        except BaseException:
            _stop([c.proc for c in running])
            raise


def _stop(running: Sequence[subprocess.Popen], grace_sec: float = 60.0) -> None:
    """SIGTERM the children (the trainer writes a checkpoint and ends KILLED), then wait."""
    for proc in running:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_sec
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


def _record_results(spec: SweepSpec, parent: Any, rows: list[Row], stats: SweepStats) -> Path:
    """Statistics as parent metrics; results, summary and the job config as parent artifacts."""
    from mlproject.research.results import atomic_write_text
    from mlproject.tracking import sweeps

    metrics = stats_to_metrics(stats)
    for row in rows:  # parameter counts per group: the size side of the comparison
        if row.get("params_total") is not None:
            metrics[f"params_total/{metric_key(row['group'])}"] = float(row["params_total"])
    finished = sum(r["status"] == "FINISHED" for r in rows)
    sweeps.log_metrics(parent.run_id, {**metrics, "children_finished": finished, "children_total": len(rows)},
                       step=finished)
    results_dir = Path(spec.base.tracking.output_dir) / "sweeps" / parent.run_id
    files = list(write_results(rows, results_dir))
    files.append(atomic_write_text(results_dir / "summary.json", json.dumps(stats.as_dict(), indent=2)))
    files.append(atomic_write_text(results_dir / "sweep.yaml", spec.config_text))
    sweeps.log_files(parent.run_id, files)
    return results_dir
