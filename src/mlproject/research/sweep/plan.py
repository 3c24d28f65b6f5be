"""Stage 1 of a sweep: the parent run and its planned children, stored on the parent.

`plan_sweep(spec)` opens (or, with resume, continues) the parent, matches the children of an
interrupted sweep, and logs the plan (`Artifact.PLAN_FILE`) on the parent so that the other
stages can run anywhere from the parent's run id. A child's config is logged on its own run
(`Artifact.PLAN_CONFIG`): `train --child-run-id` trains it from that alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mlproject.app.config import RunConfig
from mlproject.config import dump_yaml, to_dict
from mlproject.errors import ConfigError, MlprojectError
from mlproject.protocol import result_line
from mlproject.research.sweep.child import child_action
from mlproject.research.sweep.spec import ChildSpec, SweepSpec, with_context
from mlproject.schema import Artifact, ChildAction, RunRole, RunStatus, Tag

if TYPE_CHECKING:  # the MLflow adapters are imported when a sweep runs
    from mlproject.tracking.client import ParentRun
    from mlproject.tracking.queries import RunRecord


@dataclass(frozen=True)
class PlannedChild:
    """One child of a planned sweep as its plan stores it (`Artifact.PLAN_FILE`, these keys in this order)."""

    run_id: str   # "" until a new child's run is created, when its training starts
    name: str     # <group>-s<seed>, the run's name
    group: str
    seed: int
    action: str   # a ChildAction: done | leased | new | resume | restart


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
    children: list[PlannedChild]     # in the spec's order
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

    # Fields added after plans were first stored: written only when set, so a stored plan writes
    # back unchanged and a release before them still reads the plans that leave them off.
    LATER_FIELDS: ClassVar[dict[str, Any]] = {"local_copies": False}

    def to_json(self) -> str:
        data = {k: v for k, v in dataclasses.asdict(self).items()
                if not (k in self.LATER_FIELDS and self.LATER_FIELDS[k] == v)}
        return json.dumps(data, indent=2)

    @property
    def child_run_ids(self) -> list[str]:
        return [c.run_id for c in self.children]

    @property
    def todo(self) -> list[str]:
        """Run ids of the children that still have to train."""
        return [c.run_id for c in self.children if c.action != ChildAction.DONE]

    @classmethod
    def from_json(cls, text: str) -> SweepPlan:
        data = json.loads(text)
        return cls(**{**data, "children": [PlannedChild(**c) for c in data["children"]]})


@dataclass
class ChildRuns:
    """Creates the runs of a plan's new children: SCHEDULED, nested under the parent, with
    their planned config (`Artifact.PLAN_CONFIG`).

    The local engine creates a child's run as its training starts: MLflow takes a run's start
    time from its creation and offers no way to move it, so a child created when the sweep
    was planned would show its queue time as training time. `--plan-only` must hand out run
    ids, so it creates every child up front (`create_all`).
    """

    parent: ParentRun
    specs: dict[str, ChildSpec]                    # by child name
    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # of the runs still to create, by name

    def ensure(self, plan: SweepPlan, child: PlannedChild) -> PlannedChild:
        """`child` with its run, created now if it has none; the plan's entry is replaced too."""
        from mlproject.tracking import client

        if child.run_id:
            return child
        run_id = client.create_child(self.parent, run_name=child.name, tags=self.tags[child.name])
        self.log_config(run_id, child.name)
        made = dataclasses.replace(child, run_id=run_id)
        plan.children = [made if c is child else c for c in plan.children]
        return made

    def create_all(self, plan: SweepPlan) -> None:
        for child in list(plan.children):
            self.ensure(plan, child)

    def log_config(self, run_id: str, name: str) -> None:
        """The child's RunConfig on its run: `train --child-run-id` trains it from that."""
        from mlproject.tracking import client

        cfg = _child_run_config(self.specs[name], self.parent.experiment_name)
        client.log_text(run_id, dump_yaml(to_dict(cfg)), Artifact.PLAN_CONFIG)


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """Stage 1: the parent run and its SCHEDULED children (with resume: the earlier ones
    matched); print the plan and a `MLPROJECT_RESULT` line with the children's run ids."""
    plan, _ = plan_stage(spec, eager=True)
    print(result_line({"step": spec.kind, "stage": "plan", "run_id": plan.parent_run_id,
                       "experiment_id": plan.experiment_id, "experiment_name": plan.experiment_name,
                       "children": plan.child_run_ids, "todo": plan.todo}), flush=True)
    return plan


def plan_stage(spec: SweepSpec, eager: bool) -> tuple[SweepPlan, ChildRuns]:
    """The parent and the plan, stored on it; the new children's runs are created now when
    `eager`, else as each starts (`ChildRuns.ensure`). Any error ends the parent FAILED (KILLED
    on an interrupt)."""
    from mlproject.research.describe import parent_params
    from mlproject.tracking import client

    _check_before_runs(spec)
    parent = _open_parent(spec)
    print(f"{spec.kind}: parent run {parent.run_id} in experiment {parent.experiment_name!r} "
          f"(id {parent.experiment_id})", flush=True)
    try:
        client.log_params_once(parent.run_id, parent_params(spec))
        plan = _new_plan(spec, parent)
        runs = ChildRuns(parent, {child.name: child for child in spec.children})
        with _planning_lease(parent.run_id, spec):
            plan.children = _match_children(spec, runs)
            if eager:
                runs.create_all(plan)
        _print_plan(spec, plan.children)
        store_plan(plan)
    except BaseException as exc:
        client.set_status(parent.run_id, RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED)
        raise
    return plan, runs


def _check_before_runs(spec: SweepSpec) -> None:
    """Everything that can be refused before any run exists."""
    from mlproject.app.local_copies import check_results_dir
    from mlproject.research.distinct import check_groups_differ
    from mlproject.tracking.store import ensure_store

    check_groups_differ(spec)  # a sweep must not compare a model with itself
    if spec.base.tracking.local_copies:  # the local results copy, written when the children are done
        check_results_dir(spec.kind, spec.experiment, spec.base.tracking.profile)
    ensure_store()
    _check_children(spec)  # a child that cannot train leaves no stray runs


def _new_plan(spec: SweepSpec, parent: ParentRun) -> SweepPlan:
    """The plan of `spec` under `parent`, its children still to match."""
    previous = parent.previous
    return SweepPlan(
        kind=spec.kind, parent_run_id=parent.run_id, experiment_id=parent.experiment_id,
        experiment_name=parent.experiment_name, groups=list(spec.groups), metrics=list(spec.metrics),
        children=[], output_dir=spec.base.tracking.output_dir, local_copies=spec.base.tracking.local_copies,
        config_text=spec.config_text,
        run_name=spec.run_name, register_best=spec.register_best,
        eval_datasets=list(spec.eval_datasets), cache_dir=spec.base.runtime.cache_dir, device=spec.base.runtime.device,
        lease_heartbeat=spec.base.tracking.lease_heartbeat, lease_timeout=spec.base.tracking.lease_timeout,
        register_best_ungated=spec.register_best_ungated, alpha=spec.alpha, effect=spec.effect,
        targets=list(spec.targets), target_alpha=spec.target_alpha, ladder=spec.ladder,
        adopted_from=previous.run_id if previous and previous.run_id != parent.run_id else None)


def _open_parent(spec: SweepSpec) -> ParentRun:
    """The spec's parent to continue (an adaptive sweep's next round, back to RUNNING) or a
    parent opened as `client.open_parent` decides."""
    from mlproject.tracking import client

    if spec.parent is not None:
        client.set_status(spec.parent.run_id, RunStatus.RUNNING)
        return spec.parent
    return client.open_parent(
        experiment=spec.experiment, run_name=spec.run_name, role=RunRole.SWEEP_PARENT,
        match={Tag.SWEEP_KEY: spec.key}, resume=spec.resume, fallback_experiment=spec.base.former_default_experiment,
        tags={Tag.SWEEP_KIND: spec.kind, Tag.GROUPS: json.dumps(spec.groups), Tag.METRICS: json.dumps(spec.metrics),
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


def store_plan(plan: SweepPlan) -> None:
    """The plan with its children as they stand (a child still to create has run id ""), logged on the parent."""
    from mlproject.tracking import client

    client.log_text(plan.parent_run_id, plan.to_json(), Artifact.PLAN_FILE)


def load_plan(parent_run_id: str) -> SweepPlan:
    """The plan `plan_sweep` stored on a parent run, or a one-line error naming the run."""
    from mlproject.tracking import client

    text = client.load_text(parent_run_id, Artifact.PLAN_FILE)
    if text is None:
        raise MlprojectError(f"run {parent_run_id} is not a planned compare/ablation parent (it has no "
                             f"{Artifact.PLAN_FILE} artifact); plan one with `mlproject compare --plan-only`")
    return SweepPlan.from_json(text)


def _match_children(spec: SweepSpec, runs: ChildRuns) -> list[PlannedChild]:
    """The planned children: matched to existing runs (with resume), else new ones without a run
    yet (their tags kept in `runs`). Every matched child not yet FINISHED gets its config
    (`Artifact.PLAN_CONFIG`) logged on its run."""
    from mlproject.tracking import client

    parent = runs.parent
    existing = _existing_cells(spec, parent)
    children = []
    for child in spec.children:
        run = existing.get((child.group, child.seed))
        if run is None:
            runs.tags[child.name] = {**child.tags, Tag.GROUP: child.group, Tag.SEED: str(child.seed),
                                     Tag.SWEEP_KEY: spec.key}
            children.append(PlannedChild("", child.name, child.group, child.seed, ChildAction.NEW))
            continue
        if run.tags.get(Tag.PARENT) != parent.run_id:
            client.adopt_child(run.run_id, parent.run_id)
        action = child_action(run, child.cfg.tracking.lease_timeout)
        if action not in (ChildAction.DONE, ChildAction.LEASED):
            runs.log_config(run.run_id, child.name)
        children.append(PlannedChild(run.run_id, child.name, child.group, child.seed, action))
    return children


def _existing_cells(spec: SweepSpec, parent: ParentRun) -> dict[tuple[str, int], RunRecord]:
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


def _check_children(spec: SweepSpec) -> None:
    """Prepare the shared data once and check every child's model and batch shape against it."""
    from mlproject.data.prepare import prepare_data
    from mlproject.training.device import select_device
    from mlproject.training.preflight import check_fits

    select_device(spec.base.runtime.device)  # the children train here: a device this machine lacks is refused now
    data = prepare_data(spec.base.data, spec.base.runtime)
    for child in spec.children:
        where = f"{spec.kind} child {child.name}"
        try:
            resolved = child.cfg.resolved(data.vocab_size)
        except ConfigError as exc:
            raise with_context(where, exc) from None
        check_fits(resolved.model, resolved.train, data, where=where)


def _print_plan(spec: SweepSpec, children: Sequence[PlannedChild]) -> None:
    labels = {ChildAction.DONE: "finished", ChildAction.LEASED: "trained by another process",
              ChildAction.RESUME: "to resume", ChildAction.RESTART: "to restart", ChildAction.NEW: "new"}
    counts = {action: sum(c.action == action for c in children) for action in labels}
    parts = [f"{n} {labels[action]}" for action, n in counts.items() if n]
    shape = f"{len(spec.groups)} groups"
    if spec.ladder is not None:  # a ladder's sweep groups are its cells
        budgets = len(spec.ladder["budgets"])
        shape = (f"{len(spec.ladder['groups'])} groups x {len(spec.ladder['rungs'])} rungs"
                 + (f" x {budgets} budgets" if budgets else ""))
    print(f"{spec.kind}: {len(children)} child runs ({', '.join(parts)}): "
          f"{shape} x {len({c.seed for c in spec.children})} seeds", flush=True)


def _child_run_config(child: ChildSpec, experiment_name: str) -> RunConfig:
    return child.cfg.replace(source=f"child {child.name}", tracking={
        "experiment_name": experiment_name, "run_name": child.name, "resume_from": None})

