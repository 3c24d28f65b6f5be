"""Stage 2 of a sweep: train one planned child in its own run, wherever this process is.

A child needs nothing but its run id and the tracking store: its config is its run's
`Artifact.PLAN_CONFIG`, its checkpoints are its run's artifacts. Its lease (tracking/lease.py)
makes sure one process at a time trains it; a FINISHED child is left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlproject.app.config import RunConfig
from mlproject.config import build_sections
from mlproject.errors import MlprojectError
from mlproject.research.child_output import ChildOutput, captured
from mlproject.schema import Artifact, ChildAction, RunStatus, Tag, checkpoint_artifact

if TYPE_CHECKING:
    from mlproject.tracking.queries import RunRecord


def child_action(run: RunRecord, lease_timeout: float) -> str:
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
        cfg = cfg.replace(source=f"child {name}", tracking={"resume_from": run_id})
    try:
        outcome = train_tracked(cfg, parent_run_id=run.tags.get(Tag.PARENT), run_id=run_id)
    except LeaseHeld:  # another process took the run first: its state is that process's
        raise
    except Exception:
        client.fail_if_unfinished(run_id)
        raise
    return outcome.status


def train_captured(run_id: str, output: ChildOutput, name: str, log: Path) -> tuple[str, bool]:
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


def child_command(run_id: str, python: str | None = None) -> list[str]:
    """The child stage as a command: what `--parallel`, the DAG's mapped tasks and a
    Kubernetes pod run for one child."""
    prefix = [python, "-m", "mlproject"] if python else ["mlproject"]
    return [*prefix, "train", "--child-run-id", run_id]


