"""The local worker pool: a sweep's children trained in this process one by one, or `parallel`
at a time as `mlproject train --child-run-id` subprocesses, each with its share of the cores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from mlproject.app.config import RunConfig
from mlproject.protocol import hand_run_to
from mlproject.research.child_output import ChildOutput
from mlproject.research.sweep.child import _captured_child, child_command
from mlproject.research.sweep.plan import SweepPlan, _ensure_run, _plan_stage, _store_plan, _Task
from mlproject.research.sweep.spec import SweepSpec
from mlproject.schema import TERMINAL_STATUSES, Artifact, ChildAction, RunStatus

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


