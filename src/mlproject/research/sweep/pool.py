"""The local worker pool: processes `parallel` at a time, each with its share of the cores.

Two users, one pool (`run_processes`): a sweep's children as `mlproject train --child-run-id`
subprocesses (`--parallel N`), and tune's worker processes of one study. A sweep with
`--parallel 1` trains its children here one by one instead (`run_sequential`). On an error or
an interrupt the running processes get SIGTERM (the trainer writes a checkpoint and ends its
run KILLED) and a grace period before they are killed.

`train_sweep` is the first two stages in one process: plan, then train the planned children
with this pool; children another process holds are waited for, so the aggregate sees them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from mlproject.app.config import RunConfig
from mlproject.protocol import hand_run_to
from mlproject.research.child_output import ChildOutput
from mlproject.research.sweep.child import child_command, train_captured
from mlproject.research.sweep.plan import ChildRuns, PlannedChild, SweepPlan, plan_stage, store_plan
from mlproject.research.sweep.spec import SweepSpec
from mlproject.schema import TERMINAL_STATUSES, Artifact, ChildAction, RunStatus

T = TypeVar("T")
GRACE_SEC = 60.0  # after SIGTERM, before SIGKILL: time for a checkpoint


# ----------------------------------------------------------------------------- the process pool

def threads_per_worker(parallel: int) -> int:
    """Torch threads for each of `parallel` processes: this process's cores split evenly."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // parallel)


def worker_env(threads: int, run_id: str | None, **extra: str) -> dict[str, str]:
    """A worker's environment: this tracking store (as an absolute URI), its thread count, and
    the run it is handed (`run_id`; None hands it none)."""
    from mlproject.tracking.queries import absolute_tracking_uri

    env = {**os.environ, "MLFLOW_TRACKING_URI": absolute_tracking_uri(), "OMP_NUM_THREADS": str(threads), **extra}
    return hand_run_to(env, run_id)


class WorkerProcess(Generic[T]):
    """One worker process for `item`; with `output`, its output goes to `log` and as `output`
    says, else it shares this process's console."""

    def __init__(self, item: T, name: str, cmd: list[str], env: dict[str, str], log: Path | None = None,
                 output: ChildOutput | None = None) -> None:
        self.item, self.name, self.log, self.output = item, name, log, output
        piped = output is not None and log is not None
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if piped else None,
                                     stderr=subprocess.STDOUT if piped else None, text=True, errors="replace",
                                     env=env)
        self._pump = threading.Thread(target=self._copy, daemon=True) if piped else None
        if self._pump is not None:
            self._pump.start()

    def _copy(self) -> None:
        assert self.proc.stdout is not None and self.log is not None and self.output is not None
        with self.log.open("w", encoding="utf-8") as out:  # a child's logs/train.log artifact
            for line in self.proc.stdout:
                self.output.line(self.name, line, out)

    def done(self) -> bool:
        if self.proc.poll() is None:
            return False
        if self._pump is not None:
            self._pump.join()
        return True


def run_processes(items: Iterable[T], parallel: int, start: Callable[[T], WorkerProcess[T]],
                  finish: Callable[[WorkerProcess[T]], None], grace_sec: float = GRACE_SEC) -> None:
    """Run `start(item)` for every item, at most `parallel` at a time; `finish` each as it ends.
    On any error or interrupt the running ones are stopped (`stop`) before it propagates."""
    pending = list(items)
    running: list[WorkerProcess[T]] = []
    try:
        while pending or running:
            while pending and len(running) < parallel:
                running.append(start(pending.pop(0)))
            for worker in [w for w in running if w.done()]:
                running.remove(worker)
                finish(worker)
            time.sleep(0.2)
    except BaseException:
        stop([w.proc for w in running], grace_sec)
        raise


def stop(running: Sequence[subprocess.Popen], grace_sec: float = GRACE_SEC) -> None:
    """SIGTERM the processes (the trainer writes a checkpoint and ends KILLED), wait up to
    `grace_sec` for all of them, then SIGKILL those still alive."""
    for proc in running:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_sec
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()  # reaped: no zombie, and its return code is set


# ----------------------------------------------------------------------------- a sweep's children

def train_sweep(spec: SweepSpec) -> SweepPlan:
    """Plan the sweep and train its children here (the first two stages); the parent stays
    RUNNING for `aggregate_sweep` (or, in an adaptive sweep, for the next round's children)."""
    from mlproject.tracking import client

    plan, runs = plan_stage(spec, eager=spec.resume)
    try:
        todo = [c for c in plan.children if c.action not in (ChildAction.DONE, ChildAction.LEASED)]
        elsewhere = [c for c in plan.children if c.action == ChildAction.LEASED]
        if todo or elsewhere:
            _prepare_data(spec.base)
        output = ChildOutput(spec.verbose, spec.log_file, spec.metrics[0] if spec.metrics else None)
        if spec.parallel > 1 and len(todo) > 1:
            elsewhere += run_parallel(todo, spec.parallel, plan, runs, output)
        else:
            elsewhere += run_sequential(todo, plan, runs, output)
        _wait_for_others(elsewhere, plan, runs, output)
    except BaseException as exc:
        client.set_status(plan.parent_run_id,
                          RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED)
        raise
    finally:  # the children created while training, so `--aggregate PARENT` finds them
        store_plan(plan)
    return plan


def run_sequential(children: Sequence[PlannedChild], plan: SweepPlan, runs: ChildRuns,
                   output: ChildOutput) -> list[PlannedChild]:
    """Train the children one by one in this process; return those another process holds.

    Each child's output goes to its run's logs/train.log (and the console as `output` says)."""
    from mlproject.tracking import client
    from mlproject.tracking.lease import LeaseHeld

    elsewhere = []
    for i, planned in enumerate(children, 1):
        child = runs.ensure(plan, planned)
        output.start(child.name, child.action, child.run_id, position=f", {i}/{len(children)}")
        try:
            with tempfile.TemporaryDirectory(prefix="mlproject-child-") as tmp:
                status, ours = train_captured(child.run_id, output, child.name, Path(tmp) / "train.log")
        except LeaseHeld as exc:  # trained by another process: skipped here, waited for before aggregating
            print(f"child {child.name} skipped: {exc}", flush=True)
            elsewhere.append(child)
            continue
        except Exception as exc:  # the run is FAILED with its error tag; the other children still run
            print(f"child {child.name} failed: {type(exc).__name__}: {exc}".splitlines()[0], flush=True)
            client.fail_if_unfinished(child.run_id)
            continue
        output.end(child.name, child.run_id, status, note="" if ours else "trained by another process")
        if status == RunStatus.KILLED:  # the trainer stopped on SIGTERM: stop the sweep too
            raise KeyboardInterrupt(f"child {child.name} was interrupted")
    return elsewhere


def run_parallel(children: Sequence[PlannedChild], parallel: int, plan: SweepPlan, runs: ChildRuns,
                 output: ChildOutput) -> list[PlannedChild]:
    """`parallel` children at a time as `mlproject train --child-run-id` processes (the child stage);
    return those another process holds."""
    threads = threads_per_worker(parallel)
    print(f"running {len(children)} children, {parallel} at a time with {threads} torch thread(s) each", flush=True)
    elsewhere: list[PlannedChild] = []
    with tempfile.TemporaryDirectory(prefix="mlproject-sweep-") as tmp:
        def start(planned: PlannedChild) -> WorkerProcess[PlannedChild]:
            child = runs.ensure(plan, planned)
            folder = Path(tmp) / child.name
            folder.mkdir()
            cmd = child_command(child.run_id, python=sys.executable) + [
                "--num-threads", str(threads), "--progress", "lines"]
            output.start(child.name, child.action, child.run_id)
            env = worker_env(threads, child.run_id, MLFLOW_EXPERIMENT_ID=plan.experiment_id)
            return WorkerProcess(child, child.name, cmd, env, folder / "train.log", output)

        def finish(worker: WorkerProcess[PlannedChild]) -> None:
            if _held_elsewhere(worker, plan.lease_timeout):
                elsewhere.append(worker.item)

        run_processes(children, parallel, start, finish)
    return elsewhere


def _held_elsewhere(worker: WorkerProcess[PlannedChild], lease_timeout: float) -> bool:
    """Close a child process's run; True (nothing touched) when another live process trains it."""
    from mlproject.tracking import client
    from mlproject.tracking.lease import read, release_dead, this_process
    from mlproject.tracking.queries import get_run

    run_id, name = worker.item.run_id, worker.name
    state = read(run_id)
    ours = state.holder is not None and (state.holder.host, state.holder.pid) == (this_process().host, worker.proc.pid)
    if not ours and state.holder is not None:  # refused: the run's state and logs are the holder's
        if state.live(lease_timeout):
            print(f"skipped {name}: run {run_id} is trained by another process ({state.holder})", flush=True)
            return True
        status = get_run(run_id).status
        if status in TERMINAL_STATUSES:
            print(f"skipped {name}: run {run_id} was trained by another process: {status}", flush=True)
            return False
    release_dead(run_id, worker.proc.pid)  # a child killed hard never released its lease
    status = client.fail_if_unfinished(run_id)
    assert worker.log is not None and worker.output is not None
    client.log_files(run_id, [worker.log], Artifact.LOGS)
    code = worker.proc.returncode
    worker.output.end(name, run_id, status, note=f"exit code {code}" if code else "")
    return False


def _wait_for_others(children: Sequence[PlannedChild], plan: SweepPlan, runs: ChildRuns,
                     output: ChildOutput) -> None:
    """Wait until the children other processes train are released, so the aggregate includes
    them. A child whose holder died (its lease went stale, the run never ended) is trained here."""
    from mlproject.tracking.lease import live_holder
    from mlproject.tracking.queries import get_run

    heartbeat_sec, lease_timeout = plan.lease_heartbeat, plan.lease_timeout
    waiting = list(children)
    if waiting:
        print(f"waiting for {len(waiting)} child run(s) trained by other processes: "
              + ", ".join(c.name for c in waiting), flush=True)
    while waiting:
        time.sleep(heartbeat_sec)
        for child in list(waiting):
            if live_holder(child.run_id, lease_timeout) is not None:
                continue
            waiting.remove(child)
            if get_run(child.run_id).status not in TERMINAL_STATUSES:  # its holder died: continue it here
                waiting += run_sequential([child], plan, runs, output)


def _prepare_data(base: RunConfig) -> None:
    """Build the tokenizer and token caches once, before any child (children then reuse them)."""
    from mlproject.data.prepare import prepare_data

    prepare_data(base.data, base.runtime)
