"""The one worker pool (research/sweep/pool.py) that a sweep's `--parallel` children and tune's
worker processes run on: at most N processes at a time, each finished once with its exit code,
and on an interrupt SIGTERM for the running ones, then SIGKILL for those still alive after the
grace period."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from mlproject.research.sweep.pool import WorkerProcess, run_processes, threads_per_worker

# Exits with the code it is given.
EXIT = "import sys; sys.exit(int(sys.argv[1]))"
# Writes 'term' to its file on SIGTERM and exits; signals readiness by creating the file first.
ON_TERM = ("import pathlib, signal, sys, time; f = pathlib.Path(sys.argv[1]); "
           "signal.signal(signal.SIGTERM, lambda *_: (f.write_text('term'), sys.exit(3))); "
           "f.write_text('ready'); time.sleep(600)")
# Ignores SIGTERM (a child stuck in a long step): only SIGKILL ends it.
DEAF = ("import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1]).write_text('ready'); time.sleep(600)")


def _worker(i: int, code: str, *args: str) -> WorkerProcess[int]:
    return WorkerProcess(i, f"worker{i}", [sys.executable, "-c", code, *args], env={})


def test_the_pool_runs_every_item_at_most_parallel_at_a_time_and_finishes_each_with_its_exit_code():
    running, most, codes = set(), 0, {}

    def start(i: int) -> WorkerProcess[int]:
        nonlocal most
        running.add(i)
        most = max(most, len(running))
        return _worker(i, EXIT, str(i % 3))

    def finish(worker: WorkerProcess[int]) -> None:
        running.discard(worker.item)
        codes[worker.item] = worker.proc.returncode

    run_processes(range(5), 2, start, finish)
    assert codes == {0: 0, 1: 1, 2: 2, 3: 0, 4: 1}
    assert most == 2


def _wait_ready(path: Path) -> None:
    """Until the worker has installed its signal handler (a guard of a minute, not a timing)."""
    deadline = time.monotonic() + 60
    while not path.exists() or path.read_text() != "ready":
        assert time.monotonic() < deadline, f"{path.name} never started"
        time.sleep(0.01)


def test_an_interrupt_sends_sigterm_to_the_running_workers_and_kills_those_that_ignore_it(tmp_path):
    polite, deaf = tmp_path / "polite", tmp_path / "deaf"
    started: list[WorkerProcess[int]] = []

    def start(i: int) -> WorkerProcess[int]:
        code, args = [(ON_TERM, [str(polite)]), (DEAF, [str(deaf)]), (EXIT, ["0"])][i]
        started.append(_worker(i, code, *args))
        return started[-1]

    def finish(worker: WorkerProcess[int]) -> None:  # the quick one ended: the user presses Ctrl-C
        _wait_ready(polite)
        _wait_ready(deaf)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_processes(range(3), 3, start, finish, grace_sec=1.0)
    assert polite.read_text() == "term" and started[0].proc.returncode == 3  # it wrote its checkpoint
    assert started[1].proc.returncode == -signal.SIGKILL


def test_the_cores_are_split_evenly_and_every_worker_gets_at_least_one_thread(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert [threads_per_worker(n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
