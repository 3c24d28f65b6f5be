"""The sweep engine behind compare and ablation: one parent run, one child run per group x seed.

A job (research/compare.py, research/ablation.py) turns its config into a `SweepSpec`: the
groups (model versions or axis values, baseline first), one fully resolved `RunConfig` per
child, and a sweep key. Everything else is shared and lives here:

- every child config is validated before the parent or any child run exists;
- the parent is the run `mlflow run` created (`MLFLOW_RUN_ID`) or a new one; each child run is
  created (nested) as its training starts, so its start time is that, and trained one by one in this process
  (`train_tracked(..., run_id=child)`) or `parallel` at a time as `mlproject train`
  subprocesses, after the data cache is prepared once;
- `resume` picks up the newest parent with the same sweep key: FINISHED children are kept,
  unfinished ones continue from their last checkpoint, missing ones are added;
- the parent gets per-group statistics (mean, std, 95% t CI, n), paired comparisons against
  the baseline, `results.jsonl`/`results.csv`, and a final `MLPROJECT_RESULT` line.

A sweep is three stages, and every way of running one uses these same three functions:

    plan_sweep(spec)        parent + SCHEDULED children, each child's config logged on it
    train_child(run_id)     train (or resume) one planned child from its own run
    aggregate_sweep(plan)   statistics, results files and final status of the parent

`run_sweep` chains them in one process (children in-process or as `mlproject train --child-run-id`
subprocesses); the CLI exposes them as `compare --plan-only`, `train --child-run-id CHILD` and
`compare --aggregate PARENT`; the Airflow DAG runs those commands as a plan task, one mapped
task per child and an aggregate task. A child needs nothing but its run id and the tracking
server: its config is the artifact `Artifact.PLAN_CONFIG` of its run, and its checkpoints live in the
run's artifacts, so it can train (and resume) on any worker.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlproject.config import build_sections, dump_yaml, load_yaml, to_dict
from mlproject.errors import ConfigError, MlprojectError
from mlproject.outdir import kept_or_temporary
from mlproject.profiles import command_defaults
from mlproject.protocol import hand_run_to, result_line
from mlproject.research.child_output import ChildOutput, captured
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
from mlproject.app.config import RunConfig
from mlproject.schema import TERMINAL_STATUSES, Artifact, ChildAction, RunStatus, Tag, checkpoint_artifact

# Fields that change how fast a run goes, not what it computes: left out of the sweep key, so
# a sweep resumed on another machine (or with --parallel) still matches its children.
# stop_at_step is here because a sweep never sets it (reproduce does) and a new field in the key
# would change the key of every sweep in users' stores.
RUNTIME_FIELDS = {"train.device", "train.num_threads", "train.progress", "train.peak_flops",
                  "train.allow_nonfinite", "train.stop_at_step", "data.num_workers", "data.cache_dir",
                  "train.save_every_epochs", "train.preview_every", "train.compile_mode"}
# Fields added after sweeps were keyed that do change what a run computes: in the key only when set
# to something else than their default, so the sweeps planned before them still resume.
LATER_FIELDS = {"train.scheduler": "cosine", "train.amp": False, "train.amp_dtype": "bf16"}


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
    register_best: str | None = None  # register the best child's model under this name
    eval_datasets: list[str] = field(default_factory=list)  # evaluated after training (research.eval_metrics)
    register_best_ungated: bool = False  # `best` to the lowest-loss child without the evidence gate
    alpha: float = 0.05                  # of the paired tests, the power figures and the alias gate
    effect: float | None = None          # the difference the seeds-needed figure refers to
    targets: list[str] = field(default_factory=list)  # metric=value: time-to-target (research.targets)
    target_alpha: float = 0.01
    verbose: bool = False                # children's full output on the console (else one line each)
    log_file: str | None = None          # every child's full output appended here too
    ladder: dict[str, Any] | None = None  # a ladder's design (research.ladder): groups, rungs, cells
    # The next round of an adaptive sweep (research.adaptive): continue this ParentRun, keeping
    # its children, instead of opening a parent (a resume would pick the newest same-key parent,
    # or under `mlflow run` an older one).
    parent: Any = None


@dataclass
class SweepOutcome:
    parent_run_id: str
    experiment_id: str
    experiment_name: str
    status: str                 # FINISHED | FAILED | KILLED
    rows: list[Row]
    stats: SweepStats
    results_dir: Path | None    # the results files kept locally (an --output-dir), else None: logged only


# ----------------------------------------------------------------------------- job helpers

def load_job(yaml_path: str | os.PathLike[str] | None, args: Any, section: str, cls: type,
             extra_keys: Sequence[str] = ()) -> tuple[RunConfig, Any, dict[str, Any]]:
    """RunConfig sections + the job's own section from YAML and flags, plus raw `extra_keys`."""
    data = load_yaml(yaml_path) if yaml_path else {}
    extras = {k: data.pop(k) for k in extra_keys if k in data}
    sections = build_sections({**RunConfig.SECTIONS, section: cls}, yaml_path=yaml_path, args=args, data=data,
                              defaults=command_defaults(args))
    job = sections.pop(section)
    return RunConfig(**sections), job, extras


def sweep_key(kind: str, base: RunConfig, drop: Sequence[str], extra: Mapping[str, Any]) -> str:
    """Hash of what makes two sweeps the same: the config minus seeds, the varied field,
    runtime-only fields and the tracking section (names, folders), plus job settings."""
    fields = base.flat()
    ignored = RUNTIME_FIELDS | {"train.seed", "train.data_seed", *drop}
    config = {k: v for k, v in fields.items()
              if k not in ignored and not (k in LATER_FIELDS and LATER_FIELDS[k] == v)}
    payload = {"kind": kind, "config": config, **extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def child_config(base: RunConfig, *, model: Any, train: Any, seed: int) -> RunConfig:
    """A child's RunConfig: its model and train sections with `seed` for init and data order."""
    # The data order follows the seed, not the model (data_seed defaults to seed when the run's
    # config is resolved): for a given seed every group sees the same batches, so the paired
    # comparison across seeds cancels data-order noise.
    return RunConfig(model=model, data=base.data, train=dataclasses.replace(train, seed=seed),
                     tracking=dataclasses.replace(base.tracking))


def with_context(where: str, exc: ConfigError) -> ConfigError:
    """`exc` prefixed with `where` unless its message already starts with the file name."""
    message = str(exc)
    return ConfigError(message if message.startswith(where.split(":")[0]) else f"{where}: {message}")


def experiment_for(base: RunConfig, kind: str) -> str:
    """A sweep's default experiment is named for its kind: `compare-<dataset>`, `ablation-<dataset>`..."""
    return base.experiment_for(kind)


# ----------------------------------------------------------------------------- rows

def row_from_run(record: Any, metrics: Sequence[str] = ()) -> Row:
    """A results row from a child run in the tracking store (tags say its group and seed)."""
    from mlproject.tracking.artifacts import checkpoint_uri
    from mlproject.tracking.queries import artifact_files

    tags = record.tags
    present = {p.rsplit("/", 1)[-1] for p in artifact_files(record.run_id, Artifact.CHECKPOINTS)}
    uris = {kind: checkpoint_uri(record.run_id, kind) for kind in ("last", "best") if f"{kind}.pt" in present}
    names = list(dict.fromkeys([*SUMMARY_COLUMNS, *metrics]))
    return make_row(run_id=record.run_id, status=record.status, group=tags.get(Tag.GROUP, ""),
                    model_version=tags.get(Tag.MODEL_VERSION, ""), seed=int(tags.get(Tag.SEED, -1)),
                    summary={k: record.metrics[k] for k in names if k in record.metrics},
                    checkpoint_uris=uris, axis=tags.get(Tag.ABLATION_AXIS, ""), value=tags.get(Tag.ABLATION_VALUE, ""))


def global_steps(record: Any) -> int | None:
    """The optimizer steps a child trained (the original's `global_steps`): tokens seen / tokens per step."""
    per_step = record.params.get("runtime.tokens_per_step")
    seen = record.metrics.get("tokens_seen")
    return round(seen / float(per_step)) if per_step and seen is not None else None


def _export_local(plan: SweepPlan, records: Sequence[Any], rows: list[Row]) -> None:
    """The results copy under research_runs/<kind>/<experiment>/ when asked (--local-copies); in the
    original profile (the parent's tag) with the original's columns, its step counts among them."""
    from mlproject.research.results import export_sweep_results
    from mlproject.tracking.queries import get_run

    if not plan.local_copies:
        return

    original = get_run(plan.parent_run_id).tags.get(Tag.PROFILE) == "original"
    steps = {record.run_id: global_steps(record) for record in records} if original else None
    export_sweep_results(plan.kind, plan.experiment_name, rows, original_steps=steps)


# ----------------------------------------------------------------------------- the engine

@dataclass
class _Task:
    child: ChildSpec
    run_id: str   # "" until a new child's run is created, when its training starts
    action: str   # done | new | resume | restart
    tags: dict[str, str] = field(default_factory=dict)  # of the run still to create
    parent: Any = None  # the sweep's ParentRun


def _ensure_run(task: _Task) -> None:
    """Create a new child's run (SCHEDULED, nested, with its planned config).

    The local engine calls this as the child's training starts: MLflow takes a run's start
    time from its creation and offers no way to move it, so a child created when the sweep
    was planned would show its queue time as training time. `--plan-only` must hand out run
    ids, so it creates every child up front.
    """
    from mlproject.tracking import client

    if not task.run_id:
        task.run_id = client.create_child(task.parent, run_name=task.child.name, tags=task.tags)
        _log_child_config(task)


def _log_child_config(task: _Task) -> None:
    """The child's RunConfig on its run (`Artifact.PLAN_CONFIG`): `train --child-run-id` trains it from that."""
    from mlproject.tracking import client

    client.log_text(task.run_id, dump_yaml(to_dict(_child_run_config(task.child, task.parent.experiment_name))),
                    Artifact.PLAN_CONFIG)


@dataclass
class SweepPlan:
    """A planned sweep: the parent run and its children (in the spec's order), as stored on
    the parent (`Artifact.PLAN_FILE`), so the aggregate stage can run anywhere from the parent's id."""

    kind: str
    parent_run_id: str
    experiment_id: str
    experiment_name: str
    groups: list[str]
    metrics: list[str]
    children: list[dict[str, Any]]   # {"run_id", "name", "group", "seed", "action"}
    output_dir: str | None           # where the results files are kept (None: logged only)
    config_text: str = ""
    run_name: str | None = None      # the parent's readable name
    register_best: str | None = None  # register the best child's model under this name
    eval_datasets: list[str] = field(default_factory=list)  # evaluated in the aggregate stage
    cache_dir: str | None = None     # of the data, for those evaluations
    device: str = "auto"
    lease_heartbeat: float = 10.0    # of the parent's lease while aggregating
    lease_timeout: float = 60.0
    register_best_ungated: bool = False
    alpha: float = 0.05
    effect: float | None = None
    targets: list[str] = field(default_factory=list)
    target_alpha: float = 0.01
    adopted_from: str | None = None  # the earlier parent whose children a --resume took over
    local_copies: bool = False       # also a results copy under the local root (app.local_copies)
    ladder: dict[str, Any] | None = None  # a ladder's design, fitted in the aggregate stage

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @property
    def child_run_ids(self) -> list[str]:
        return [c["run_id"] for c in self.children]

    @property
    def todo(self) -> list[str]:
        """Run ids of the children that still have to train."""
        return [c["run_id"] for c in self.children if c["action"] != ChildAction.DONE]


def run_sweep(spec: SweepSpec) -> SweepOutcome:
    """Run (or resume) the sweep; print the summary table and the MLPROJECT_RESULT line.

    Raises MlprojectError after reporting when some children did not finish, and
    KeyboardInterrupt (parent KILLED) when interrupted.
    """
    return aggregate_sweep(train_sweep(spec))


def train_sweep(spec: SweepSpec) -> SweepPlan:
    """Plan the sweep and train its children here (the first two stages); the parent stays
    RUNNING for `aggregate_sweep` (or, in an adaptive sweep, for the next round's children)."""
    from mlproject.tracking import client

    plan, tasks = _plan_stage(spec, eager=spec.resume)
    settings = spec.base.tracking  # the lease's heartbeat and timeout
    try:
        todo = [t for t in tasks if t.action not in (ChildAction.DONE, ChildAction.LEASED)]
        elsewhere = [t for t in tasks if t.action == ChildAction.LEASED]
        if todo or elsewhere:
            _prepare_data(spec.base)
        output = ChildOutput(spec.verbose, spec.log_file, spec.metrics[0] if spec.metrics else None)
        if spec.parallel > 1 and len(todo) > 1:
            elsewhere += _run_parallel(todo, spec.parallel, plan, settings.lease_timeout, output)
        else:
            elsewhere += _run_sequential(todo, output)
        _wait_for_others(elsewhere, settings.lease_heartbeat, settings.lease_timeout, output)
    except BaseException as exc:
        client.set_status(plan.parent_run_id,
                          RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED)
        raise
    finally:  # the children created while training, so `--aggregate PARENT` finds them
        _store_plan(plan, tasks)
    return plan


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """Stage 1: the parent run and its SCHEDULED children (with resume: the earlier ones
    matched); print the plan and a `MLPROJECT_RESULT` line with the children's run ids."""
    plan, _ = _plan_stage(spec, eager=True)
    print(result_line({"step": spec.kind, "stage": "plan", "run_id": plan.parent_run_id,
                       "experiment_id": plan.experiment_id, "experiment_name": plan.experiment_name,
                       "children": plan.child_run_ids, "todo": plan.todo}), flush=True)
    return plan


def _plan_stage(spec: SweepSpec, eager: bool) -> tuple[SweepPlan, list[_Task]]:
    from mlproject.app.local_copies import check_results_dir
    from mlproject.research.describe import parent_params
    from mlproject.research.distinct import check_groups_differ
    from mlproject.tracking import client
    from mlproject.tracking.queries import get_run
    from mlproject.tracking.record import record_run
    from mlproject.tracking.store import ensure_store

    check_groups_differ(spec)  # before any run exists: a sweep must not compare a model with itself
    if spec.base.tracking.local_copies:  # the local results copy, written when the children are done
        check_results_dir(spec.kind, spec.experiment, spec.base.tracking.profile)
    ensure_store()
    _check_children(spec)  # before the parent exists: a child that cannot train leaves no stray runs
    parent = _open_parent(spec)
    record_run(parent.run_id, get_run(parent.run_id).tags)  # the children record the data they trained on
    print(f"{spec.kind}: parent run {parent.run_id} in experiment {parent.experiment_name!r} "
          f"(id {parent.experiment_id})", flush=True)
    try:
        client.log_params_once(parent.run_id, parent_params(spec))
        with _planning_lease(parent.run_id, spec):
            tasks = _plan(spec, parent, eager)
        _print_plan(spec, tasks)
        plan = SweepPlan(
            kind=spec.kind, parent_run_id=parent.run_id, experiment_id=parent.experiment_id,
            experiment_name=parent.experiment_name, groups=list(spec.groups), metrics=list(spec.metrics),
            children=[], output_dir=spec.base.tracking.output_dir, local_copies=spec.base.tracking.local_copies,
            config_text=spec.config_text,
            run_name=spec.run_name, register_best=spec.register_best,
            eval_datasets=list(spec.eval_datasets), cache_dir=spec.base.data.cache_dir, device=spec.base.train.device,
            lease_heartbeat=spec.base.tracking.lease_heartbeat, lease_timeout=spec.base.tracking.lease_timeout,
            register_best_ungated=spec.register_best_ungated, alpha=spec.alpha, effect=spec.effect,
            targets=list(spec.targets), target_alpha=spec.target_alpha, ladder=spec.ladder,
            adopted_from=parent.previous.run_id if parent.previous and parent.previous.run_id != parent.run_id
            else None)
        _store_plan(plan, tasks)
    except BaseException as exc:
        client.set_status(parent.run_id, RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED)
        raise
    return plan, tasks


def _open_parent(spec: SweepSpec) -> Any:
    """The spec's parent to continue (an adaptive sweep's next round, back to RUNNING) or a
    parent opened as `client.open_parent` decides."""
    from mlproject.tracking import client

    if spec.parent is not None:
        client.set_status(spec.parent.run_id, RunStatus.RUNNING)
        return spec.parent
    return client.open_parent(
        experiment=spec.experiment, run_name=spec.run_name, kind=spec.kind, sweep_key=spec.key,
        resume=spec.resume, fallback_experiment=spec.base.former_default_experiment, tags={Tag.GROUPS: json.dumps(spec.groups), Tag.METRICS: json.dumps(spec.metrics),
                                  Tag.PROFILE: spec.base.tracking.profile, **spec.tags})


@contextlib.contextmanager
def _planning_lease(parent_run_id: str, spec: SweepSpec) -> Iterator[None]:
    """With --resume, plan while holding the parent's lease: two processes resuming one sweep at
    once plan one after the other, so the second finds (and shares) the children the first
    created instead of creating a second run for each missing cell."""
    if not spec.resume:
        yield
        return
    from mlproject.tracking.lease import waiting_hold

    settings = spec.base.tracking
    with waiting_hold(parent_run_id, heartbeat_sec=settings.lease_heartbeat, timeout_sec=settings.lease_timeout):
        yield


def _store_plan(plan: SweepPlan, tasks: Sequence[_Task]) -> None:
    """The children as they stand (a child still to create has run id ""), logged on the parent."""
    from mlproject.tracking import client

    plan.children = [{"run_id": t.run_id, "name": t.child.name, "group": t.child.group, "seed": t.child.seed,
                      "action": t.action} for t in tasks]
    client.log_text(plan.parent_run_id, plan.to_json(), Artifact.PLAN_FILE)


def load_plan(parent_run_id: str) -> SweepPlan:
    """The plan `plan_sweep` stored on a parent run, or a one-line error naming the run."""
    from mlproject.tracking import client

    text = client.load_text(parent_run_id, Artifact.PLAN_FILE)
    if text is None:
        raise MlprojectError(f"run {parent_run_id} is not a planned compare/ablation parent (it has no "
                             f"{Artifact.PLAN_FILE} artifact); plan one with `mlproject compare --plan-only`")
    return SweepPlan(**json.loads(text))


def _plan(spec: SweepSpec, parent: Any, eager: bool) -> list[_Task]:
    """Match children to existing runs (with resume); the missing ones are created now when
    `eager`, else as they start (`_ensure_run`). Every child not yet FINISHED gets its config
    (`Artifact.PLAN_CONFIG`) logged on its run."""
    from mlproject.tracking import client

    existing = _existing_cells(spec, parent)
    tasks = []
    for child in spec.children:
        run = existing.get((child.group, child.seed))
        if run is None:
            tags = {**child.tags, Tag.GROUP: child.group, Tag.SEED: str(child.seed), Tag.SWEEP_KEY: spec.key}
            task = _Task(child, "", ChildAction.NEW, tags, parent)
            if eager:
                _ensure_run(task)
        else:
            if run.tags.get(Tag.PARENT) != parent.run_id:
                client.adopt_child(run.run_id, parent.run_id)
            task = _Task(child, run.run_id, child_action(run, child.cfg.tracking.lease_timeout), parent=parent)
            if task.action not in (ChildAction.DONE, ChildAction.LEASED):
                _log_child_config(task)
        tasks.append(task)
    return tasks


def _existing_cells(spec: SweepSpec, parent: Any) -> dict[tuple[str, int], Any]:
    """With resume, the children to keep by (group, seed): those of the parent taken over, then
    those already under this parent (an adaptive sweep's later rounds add cells to a parent that
    adopted only the cells of its first round)."""
    from mlproject.tracking.queries import get_run, sweep_cells

    if not spec.resume or parent.previous is None:
        return {}
    cells = sweep_cells(parent.previous, spec.key)
    if parent.previous.run_id != parent.run_id:
        cells.update(sweep_cells(get_run(parent.run_id), spec.key))
    return cells


def child_action(run: Any, lease_timeout: float) -> str:
    """What a child run needs: done (FINISHED), leased (another live process trains it), new
    (never started), resume (has a last checkpoint in its artifacts) or restart (started but
    never reached a checkpoint)."""
    from mlproject.tracking.lease import live_holder
    from mlproject.tracking.queries import artifact_files

    if run.status == RunStatus.FINISHED:
        return ChildAction.DONE
    if live_holder(run.run_id, lease_timeout) is not None:
        return ChildAction.LEASED
    if run.status == RunStatus.SCHEDULED:  # created by a plan, never started
        return ChildAction.NEW
    if checkpoint_artifact("last") in artifact_files(run.run_id, Artifact.CHECKPOINTS):
        return ChildAction.RESUME
    return ChildAction.RESTART


def _check_children(spec: SweepSpec) -> None:
    """Prepare the shared data once and check every child's model and batch shape against it."""
    from mlproject.data.prepare import prepare_data
    from mlproject.training.device import select_device
    from mlproject.training.preflight import check_fits

    select_device(spec.base.train.device)  # the children train here: a device this machine lacks is refused now
    data = prepare_data(spec.base.data)
    for child in spec.children:
        where = f"{spec.kind} child {child.name}"
        try:
            resolved = child.cfg.resolved(data.vocab_size)
        except ConfigError as exc:
            raise with_context(where, exc) from None
        check_fits(resolved.model, resolved.train, data, where=where)


def _print_plan(spec: SweepSpec, tasks: Sequence[_Task]) -> None:
    labels = {ChildAction.DONE: "finished", ChildAction.LEASED: "trained by another process",
              ChildAction.RESUME: "to resume", ChildAction.RESTART: "to restart", ChildAction.NEW: "new"}
    counts = {action: sum(t.action == action for t in tasks) for action in labels}
    parts = [f"{n} {labels[action]}" for action, n in counts.items() if n]
    shape = f"{len(spec.groups)} groups"
    if spec.ladder is not None:  # a ladder's sweep groups are its cells
        budgets = len(spec.ladder["budgets"])
        shape = (f"{len(spec.ladder['groups'])} groups x {len(spec.ladder['rungs'])} rungs"
                 + (f" x {budgets} budgets" if budgets else ""))
    print(f"{spec.kind}: {len(tasks)} child runs ({', '.join(parts)}): "
          f"{shape} x {len({c.seed for c in spec.children})} seeds", flush=True)


def _child_run_config(child: ChildSpec, experiment_name: str) -> RunConfig:
    tracking = dataclasses.replace(child.cfg.tracking, experiment_name=experiment_name, run_name=child.name,
                                   resume_from=None)
    return dataclasses.replace(child.cfg, tracking=tracking)


def planned_config(run_id: str, args: Any = None) -> RunConfig:
    """A planned child's RunConfig from its run (`Artifact.PLAN_CONFIG`), with explicit flags in `args`
    on top (runtime settings such as --num-threads or --device)."""
    from mlproject.tracking import client

    text = client.load_text(run_id, Artifact.PLAN_CONFIG)
    if text is None:
        raise MlprojectError(f"run {run_id} is not a planned sweep child (it has no {Artifact.PLAN_CONFIG} artifact); "
                             "--child-run-id trains the children that `mlproject compare --plan-only` created")
    import yaml

    sections = build_sections(RunConfig.SECTIONS, yaml_path=f"run {run_id}: {Artifact.PLAN_CONFIG}", args=args,
                              data=yaml.safe_load(text) or {})
    return RunConfig(**sections)


def train_child(run_id: str, args: Any = None) -> str:
    """Stage 2: train one planned child in its own run, wherever this process is.

    A FINISHED child is left alone (a retried task costs nothing); an unfinished one resumes
    from the last checkpoint in its artifacts (downloaded from the tracking server), so a
    killed container's retry continues where the child stopped. Returns the run's status.
    """
    return _train_child(run_id, args)[0]


def _train_child(run_id: str, args: Any = None) -> tuple[str, bool]:
    """train_child's status, and whether this process trained (the run was not already FINISHED)."""
    cfg = planned_config(run_id, args)
    if not _already_finished(run_id, cfg):
        # The action is decided under the lease: another process may have finished the run meanwhile.
        with _child_lease(run_id, cfg):
            if not _already_finished(run_id, cfg):
                return _train_leased_child(run_id, cfg), True
    return RunStatus.FINISHED, False


def _child_lease(run_id: str, cfg: RunConfig) -> Any:
    """The child's lease, waiting up to one lease timeout while another process holds it.

    A killed container never releases its lease, and a scheduler retries it within seconds: the
    retry waits for the dead holder's lease to lapse and takes the run over, instead of failing
    every retry. A holder still alive after that long is a real one: refused, naming it.
    """
    from mlproject.tracking.lease import waiting_hold

    settings = cfg.tracking
    return waiting_hold(run_id, heartbeat_sec=settings.lease_heartbeat, timeout_sec=settings.lease_timeout,
                        max_wait_sec=settings.lease_timeout + 2 * settings.lease_heartbeat)


def _already_finished(run_id: str, cfg: RunConfig) -> bool:
    from mlproject.tracking.queries import get_run

    if get_run(run_id).status != RunStatus.FINISHED:
        return False
    print(f"child {cfg.tracking.run_name or run_id}: run {run_id} is already FINISHED", flush=True)
    return True


def _train_leased_child(run_id: str, cfg: RunConfig) -> str:
    """Train (or resume) a child whose lease this process holds; its final status."""
    from mlproject.tracking import client
    from mlproject.tracking.lease import LeaseHeld
    from mlproject.tracking.queries import get_run
    from mlproject.tracking.train_tracker import train_tracked

    run = get_run(run_id)
    action = child_action(run, cfg.tracking.lease_timeout)
    name = cfg.tracking.run_name or run_id
    print(f"--- child {name} ({action}) run {run_id}", flush=True)
    if action == ChildAction.RESUME:
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, resume_from=run_id))
    try:
        outcome = train_tracked(cfg, parent_run_id=run.tags.get(Tag.PARENT), run_id=run_id)
    except LeaseHeld:  # another process took the run first: its state is that process's
        raise
    except Exception:
        client.fail_if_unfinished(run_id)
        raise
    return outcome.status


def _run_sequential(tasks: Sequence[_Task], output: ChildOutput) -> list[_Task]:
    """Train the children one by one in this process; return those another process holds.

    Each child's output goes to its run's logs/train.log (and the console as `output` says)."""
    from mlproject.tracking import client
    from mlproject.tracking.lease import LeaseHeld

    elsewhere = []
    for i, task in enumerate(tasks, 1):
        _ensure_run(task)
        name = task.child.name
        output.start(name, task.action, task.run_id, position=f", {i}/{len(tasks)}")
        try:
            with tempfile.TemporaryDirectory(prefix="mlproject-child-") as tmp:
                log = Path(tmp) / "train.log"
                status, ours = _captured_child(task.run_id, output, name, log)
        except LeaseHeld as exc:  # trained by another process: skipped here, waited for before aggregating
            print(f"child {task.child.name} skipped: {exc}", flush=True)
            elsewhere.append(task)
            continue
        except Exception as exc:  # the run is FAILED with its error tag; the other children still run
            print(f"child {task.child.name} failed: {type(exc).__name__}: {exc}".splitlines()[0], flush=True)
            client.fail_if_unfinished(task.run_id)
            continue
        output.end(name, task.run_id, status, note="" if ours else "trained by another process")
        if status == RunStatus.KILLED:  # the trainer stopped on SIGTERM: stop the sweep too
            raise KeyboardInterrupt(f"child {task.child.name} was interrupted")
    return elsewhere


def _captured_child(run_id: str, output: ChildOutput, name: str, log: Path) -> tuple[str, bool]:
    """Train a child here with its output captured; its log becomes the run's logs/train.log
    unless another process holds (LeaseHeld) or already finished the run: the log is theirs."""
    from mlproject.tracking import client
    from mlproject.tracking.lease import LeaseHeld

    ours = True
    try:
        with captured(output, name, log):
            status, ours = _train_child(run_id)
    except LeaseHeld:
        ours = False
        raise
    finally:
        if ours:
            client.log_files(run_id, [log], Artifact.LOGS)
    return status, ours


def _wait_for_others(tasks: Sequence[_Task], heartbeat_sec: float, lease_timeout: float,
                     output: ChildOutput) -> None:
    """Wait until the children other processes train are released, so the aggregate includes
    them. A child whose holder died (its lease went stale, the run never ended) is trained here."""
    from mlproject.tracking.lease import live_holder
    from mlproject.tracking.queries import get_run

    waiting = list(tasks)
    if waiting:
        print(f"waiting for {len(waiting)} child run(s) trained by other processes: "
              + ", ".join(t.child.name for t in waiting), flush=True)
    while waiting:
        time.sleep(heartbeat_sec)
        for task in list(waiting):
            if live_holder(task.run_id, lease_timeout) is not None:
                continue
            waiting.remove(task)
            if get_run(task.run_id).status not in TERMINAL_STATUSES:  # its holder died: continue it here
                waiting += _run_sequential([task], output)


def _prepare_data(base: RunConfig) -> None:
    """Build the tokenizer and token caches once, before any child (children then reuse them)."""
    from mlproject.data.prepare import prepare_data

    prepare_data(base.data)


def aggregate_sweep(plan: SweepPlan | str, output_dir: str | None = None, plots: bool = False) -> SweepOutcome:
    """Stage 3: the parent's statistics, results files and final status from its children's
    runs; print the summary table and the MLPROJECT_RESULT line.

    `plan` is a SweepPlan or a parent run id (its stored plan); `plots` also draws the
    parent's charts (as `mlproject plot` does) into the results folder and logs them. Raises
    MlprojectError after reporting when some children did not finish.
    """
    from mlproject.tracking.lease import waiting_hold

    if isinstance(plan, str):
        plan = load_plan(plan)
    # One aggregator at a time: two processes that shared a sweep's children both aggregate it,
    # and the second must find the best child's model the first logged, not log another.
    kept = output_dir or plan.output_dir  # else the files are written in a temporary folder, logged, removed
    with (waiting_hold(plan.parent_run_id, heartbeat_sec=plan.lease_heartbeat, timeout_sec=plan.lease_timeout),
          kept_or_temporary(kept and Path(kept) / "sweeps" / plan.parent_run_id, "mlproject-results-") as folder):
        return _aggregate(plan, folder, plots, kept=bool(kept))


def _aggregate(plan: SweepPlan, results_dir: Path, plots: bool, kept: bool) -> SweepOutcome:
    from mlproject.research.describe import finish_parent
    from mlproject.tracking import client
    from mlproject.tracking.queries import get_run

    missing = [c["name"] for c in plan.children if not c["run_id"]]
    if missing:
        raise MlprojectError(f"{plan.kind}: {len(missing)} planned child runs were never started "
                             f"({', '.join(missing)}); re-run the sweep with --resume to train them")
    if plan.eval_datasets:  # held-out evaluations of the finished children (skips those already done)
        from mlproject.research.eval_metrics import evaluate_children

        evaluate_children(plan.child_run_ids, plan.eval_datasets, cache_dir=plan.cache_dir, device=plan.device)
    records = [get_run(run_id) for run_id in plan.child_run_ids]
    rows = [row_from_run(record, plan.metrics) for record in records]
    # a ladder's cells are not compared with its first cell: its own statistics pair groups per rung
    stats = aggregate(rows, plan.groups, plan.metrics, alpha=plan.alpha, effect=plan.effect,
                      paired=plan.ladder is None)
    status = RunStatus.FINISHED if all(r["status"] == RunStatus.FINISHED for r in rows) else RunStatus.FAILED
    _record_results(plan, rows, stats, results_dir)
    notes, job_lines = _job_notes(plan, rows, results_dir)
    _export_local(plan, records, rows)  # research_runs/<kind>/<experiment>/
    try:
        best = finish_parent(plan, plan.parent_run_id, rows, stats, notes=notes)
    except BaseException:
        client.set_status(plan.parent_run_id, RunStatus.FAILED)
        raise
    client.set_status(plan.parent_run_id, status)
    if plots and any(r["status"] == RunStatus.FINISHED for r in rows):
        from mlproject.research.config import PlotConfig
        from mlproject.research.plots import run_plot

        run_plot(PlotConfig(parent_run_id=plan.parent_run_id, output_dir=str(results_dir / Artifact.PLOTS)))

    # a ladder's cells: the fitted metric's table only (its words follow)
    print(format_summary(stats if plan.ladder is None else dataclasses.replace(stats, metrics=plan.metrics[:1]), rows))
    if job_lines:
        print("\n".join(job_lines))
    print(f"results: {results_dir / Artifact.RESULTS_JSONL if kept else Artifact.RESULTS_JSONL} "
          f"(logged to run {plan.parent_run_id})")
    print(result_line({"step": plan.kind, "run_id": plan.parent_run_id, "experiment_id": plan.experiment_id,
                       "experiment_name": plan.experiment_name, "status": status, "children": len(rows),
                       "finished": sum(r["status"] == RunStatus.FINISHED for r in rows),
                       "power": stats.power_lines(plan.metrics[0]) if plan.metrics else [], **best}), flush=True)
    if status != RunStatus.FINISHED:
        failed = [f"{c['name']} ({r['status']})" for c, r in zip(plan.children, rows)
                  if r["status"] != RunStatus.FINISHED]
        raise MlprojectError(f"{plan.kind}: {len(failed)} of {len(rows)} child runs did not finish: "
                             f"{', '.join(failed)}; re-run with --resume to complete them")
    return SweepOutcome(plan.parent_run_id, plan.experiment_id, plan.experiment_name, status, rows, stats,
                        results_dir if kept else None)


def _job_notes(plan: SweepPlan, rows: list[Row], results_dir: Path) -> tuple[list[str], list[str]]:
    """What the job adds to the parent after the statistics: time-to-target lines, a ladder's fits
    (research.ladder_report: metrics, ladder.json, plots). Returns the parent description's
    paragraphs and the lines printed after the summary table."""
    notes: list[str] = []
    printed: list[str] = []
    if plan.targets:  # the same finished children, their eval curves
        from mlproject.research.targets import record_targets

        notes += record_targets(plan, rows)
        printed += notes
    if plan.ladder is not None:
        from mlproject.research.ladder_report import record_ladder

        markdown, words = record_ladder(plan, rows, results_dir)
        notes.append(markdown)
        printed += ["scaling ladder:", *[f"  {line}" for line in words]]
    return notes, printed


class _ChildProcess:
    """One `mlproject train` process; its output goes to a log file and as `output` says."""

    def __init__(self, task: _Task, cmd: list[str], env: dict[str, str], log: Path, output: ChildOutput) -> None:
        self.task, self.log, self.output = task, log, output
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", env=env)
        self._pump = threading.Thread(target=self._copy, daemon=True)
        self._pump.start()

    def _copy(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("w", encoding="utf-8") as out:  # the child's logs/train.log artifact
            for line in self.proc.stdout:
                self.output.line(self.task.child.name, line, out)

    def done(self) -> bool:
        if self.proc.poll() is None:
            return False
        self._pump.join()
        return True


def _run_parallel(tasks: Sequence[_Task], parallel: int, plan: SweepPlan, lease_timeout: float,
                  output: ChildOutput) -> list[_Task]:
    """`parallel` children at a time as `mlproject train --child-run-id` processes (the child stage);
    return those another process holds."""
    from mlproject.tracking.queries import absolute_tracking_uri

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // parallel)
    base_env = {**os.environ, "MLFLOW_TRACKING_URI": absolute_tracking_uri(),
                "MLFLOW_EXPERIMENT_ID": plan.experiment_id, "OMP_NUM_THREADS": str(threads)}
    print(f"running {len(tasks)} children, {parallel} at a time with {threads} torch thread(s) each", flush=True)
    pending = list(tasks)
    running: list[_ChildProcess] = []
    elsewhere: list[_Task] = []
    with tempfile.TemporaryDirectory(prefix="mlproject-sweep-") as tmp:
        try:
            while pending or running:
                while pending and len(running) < parallel:
                    task = pending.pop(0)
                    _ensure_run(task)
                    folder = Path(tmp) / task.child.name
                    folder.mkdir()
                    cmd = child_command(task.run_id, python=sys.executable) + [
                        "--num-threads", str(threads), "--progress", "lines"]
                    output.start(task.child.name, task.action, task.run_id)
                    running.append(_ChildProcess(task, cmd, hand_run_to(base_env, task.run_id),
                                                 folder / "train.log", output))
                for child in [c for c in running if c.done()]:
                    running.remove(child)
                    if _ended_here(child, lease_timeout):
                        elsewhere.append(child.task)
                time.sleep(0.2)
        except BaseException:
            _stop([c.proc for c in running])
            raise
    return elsewhere


def _ended_here(child: _ChildProcess, lease_timeout: float) -> bool:
    """Close a child process's run; True (nothing touched) when another live process trains it."""
    from mlproject.tracking import client
    from mlproject.tracking.lease import read, release_dead, this_process
    from mlproject.tracking.queries import get_run

    run_id, name = child.task.run_id, child.task.child.name
    state = read(run_id)
    ours = state.holder is not None and (state.holder.host, state.holder.pid) == (this_process().host, child.proc.pid)
    if not ours and state.holder is not None:  # refused: the run's state and logs are the holder's
        if state.live(lease_timeout):
            print(f"skipped {name}: run {run_id} is trained by another process ({state.holder})", flush=True)
            return True
        status = get_run(run_id).status
        if status in TERMINAL_STATUSES:
            print(f"skipped {name}: run {run_id} was trained by another process: {status}", flush=True)
            return False
    release_dead(run_id, child.proc.pid)  # a child killed hard never released its lease
    status = client.fail_if_unfinished(run_id)
    client.log_files(run_id, [child.log], Artifact.LOGS)
    code = child.proc.returncode
    child.output.end(name, run_id, status, note=f"exit code {code}" if code else "")
    return False


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


def child_command(run_id: str, python: str | None = None) -> list[str]:
    """The child stage as a command: what `--parallel`, the DAG's mapped tasks and a
    Kubernetes pod run for one child."""
    prefix = [python, "-m", "mlproject"] if python else ["mlproject"]
    return [*prefix, "train", "--child-run-id", run_id]


def _record_results(plan: SweepPlan, rows: list[Row], stats: SweepStats, results_dir: Path) -> None:
    """Statistics as parent metrics; results, summary and the job config as parent artifacts."""
    from mlproject.io import atomic_write_text
    from mlproject.tracking import client

    metrics = stats_to_metrics(stats)
    for row in rows:  # parameter counts per group: the size side of the comparison
        if row.get("params_total") is not None:
            metrics[f"params_total/{metric_key(row['group'])}"] = float(row["params_total"])
    finished = sum(r["status"] == RunStatus.FINISHED for r in rows)
    client.log_metrics(plan.parent_run_id, {**metrics, "children_finished": finished,
                                            "children_total": len(rows)}, step=finished)
    files = list(write_results(rows, results_dir))
    files.append(atomic_write_text(results_dir / Artifact.SWEEP_SUMMARY, json.dumps(stats.as_dict(), indent=2)))
    files.append(atomic_write_text(results_dir / Artifact.SWEEP_CONFIG, plan.config_text))
    client.log_files(plan.parent_run_id, files)
