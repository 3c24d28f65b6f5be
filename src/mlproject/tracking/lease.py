"""The lease on a run that trains: one run is trained by one process at a time.

While a process trains a run it holds the run's lease: two run tags, the holder (host, pid,
process start) and a heartbeat (epoch seconds) that a daemon thread refreshes every
`heartbeat_sec`. Another process that wants to train the run refuses with one line naming
the holder, unless the heartbeat is older than `timeout_sec` (the holder died without
releasing it, e.g. SIGKILL): then it takes the lease over and says so.

The tags live in the tracking store itself, so the lease holds wherever the run is visible
(SQLite, a tracking server shared by Airflow workers); no local file lock is involved. The
store offers no compare-and-set, so `acquire` writes its holder, waits a moment and reads the
holder back: of two processes that both saw a free lease, the last writer keeps it and the
other backs off. The heartbeat thread keeps checking the holder too, and says so if the lease
was taken away.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from mlproject.schema import LEASE_RELEASED, Tag
from mlproject.errors import MlprojectError
from mlproject.tracking import client

_PROCESS_START = round(time.time(), 3)  # tells apart two processes with the same pid over time
SETTLE_SEC = 0.5  # between writing the holder and reading it back: longer than a store round trip
_HELD: dict[str, Lease] = {}  # run id -> the lease this process holds on it


class LeaseHeld(MlprojectError):
    """The run is being trained by another live process."""


@dataclass(frozen=True)
class Holder:
    """The process that holds a lease, and the timeout it promised to beat within."""

    host: str
    pid: int
    start: float
    timeout: float = field(default=0.0, compare=False)

    def to_tag(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "start": self.start, "timeout": self.timeout},
                          sort_keys=True)

    @classmethod
    def from_tag(cls, text: str | None) -> Holder | None:
        try:
            data = json.loads(text or "")
            return cls(str(data["host"]), int(data["pid"]), float(data["start"]), float(data.get("timeout", 0)))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def __str__(self) -> str:
        return f"host {self.host} pid {self.pid}"


def this_process(timeout_sec: float = 0.0) -> Holder:
    return Holder(socket.gethostname(), os.getpid(), _PROCESS_START, timeout_sec)


@dataclass(frozen=True)
class LeaseState:
    """A run's lease as read from its tags."""

    holder: Holder | None
    heartbeat: float | None  # None: released or never held

    def age(self) -> float | None:
        return None if self.heartbeat is None else max(0.0, time.time() - self.heartbeat)

    def live(self, timeout_sec: float) -> bool:
        """Held by a process whose last heartbeat is younger than `timeout_sec`, or than the
        holder's own timeout if that is longer (a short --lease-timeout never steals a lease
        whose holder beats more slowly)."""
        age = self.age()
        return self.holder is not None and age is not None and age < max(timeout_sec, self.holder.timeout)


def read(run_id: str) -> LeaseState:
    tags = client.client().get_run(run_id).data.tags
    try:
        heartbeat = float(tags.get(Tag.LEASE_HEARTBEAT, ""))
    except ValueError:  # "released" or absent
        heartbeat = None
    return LeaseState(Holder.from_tag(tags.get(Tag.LEASE_HOLDER)), heartbeat)


def live_holder(run_id: str, timeout_sec: float) -> Holder | None:
    """The other live process that holds the run's lease, or None."""
    state = read(run_id)
    if state.live(timeout_sec) and state.holder != this_process():
        return state.holder
    return None


def held_message(run_id: str, holder: Holder, state: LeaseState | None = None) -> str:
    age = state.age() if state is not None else None
    beat = f", last heartbeat {age:.0f}s ago" if age is not None else ""
    return (f"run {run_id} is being trained by another process ({holder}{beat}); wait for it to end, "
            "or after it died retry once its lease times out (--lease-timeout)")


class Lease:
    """This process's lease on one run; `release` (or the context manager) gives it back."""

    def __init__(self, run_id: str, *, heartbeat_sec: float, timeout_sec: float) -> None:
        self.run_id, self.heartbeat_sec, self.timeout_sec = run_id, heartbeat_sec, timeout_sec
        self.me = this_process(timeout_sec)
        self.lost = False
        self._nested = False  # this process already held the run's lease: release leaves it to the outer holder
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, *, contested: bool = True) -> Lease:
        """Take the lease (over a stale one too) and start the heartbeat; LeaseHeld if another live
        process holds it or wins the race for it. `contested=False`: a run just created by this
        process, whose id no other process knows yet."""
        if self.run_id in _HELD:
            self._nested = True
            return self
        state = read(self.run_id)
        if state.holder is not None and state.holder != self.me and state.heartbeat is not None:
            if state.live(self.timeout_sec):
                raise LeaseHeld(held_message(self.run_id, state.holder, state))
            print(f"note: taking over the lease of run {self.run_id} from {state.holder}, presumed dead "
                  f"(no heartbeat for {state.age():.0f}s; lease timeout "
                  f"{max(self.timeout_sec, state.holder.timeout):g}s)",
                  file=sys.stderr, flush=True)
        self._write()
        winner = self.me
        if contested:
            time.sleep(SETTLE_SEC)
            winner = read(self.run_id).holder
        if winner != self.me:  # another process wrote after us: it keeps the lease
            raise LeaseHeld(held_message(self.run_id, winner) if winner else
                            f"run {self.run_id}: its lease was released while this process took it; retry")
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.run_id[:8]}", daemon=True)
        self._thread.start()
        _HELD[self.run_id] = self
        return self

    def _write(self) -> None:
        client.set_tags(self.run_id, {Tag.LEASE_HOLDER: self.me.to_tag(), Tag.LEASE_HEARTBEAT: f"{time.time():.3f}"})

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_sec):
            try:
                holder = read(self.run_id).holder
                if holder != self.me:
                    self.lost = True
                    print(f"warning: run {self.run_id}: the lease was taken over by {holder}; "
                          "this process no longer holds it", file=sys.stderr, flush=True)
                    return
                client.set_tags(self.run_id, {Tag.LEASE_HEARTBEAT: f"{time.time():.3f}"})
            except Exception:  # a busy store (SQLite locked): the next beat tries again
                continue

    def release(self) -> None:
        """Stop the heartbeat and mark the lease released (if this process still holds it)."""
        if self._nested:
            return
        if _HELD.get(self.run_id) is self:
            del _HELD[self.run_id]
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.lost:
            return
        try:
            if read(self.run_id).holder == self.me:
                client.set_tags(self.run_id, {Tag.LEASE_HEARTBEAT: LEASE_RELEASED})
        except Exception:  # the store is gone: the lease times out by itself
            pass

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def waiting_hold(run_id: str, *, heartbeat_sec: float, timeout_sec: float,
                 max_wait_sec: float | None = None) -> Iterator[Lease]:
    """Hold the run's lease, waiting while another live process holds it: without a bound for a
    short critical section (another process in the same section takes a moment), or up to
    `max_wait_sec` (then LeaseHeld, naming the holder), saying once that it waits."""
    lease = Lease(run_id, heartbeat_sec=heartbeat_sec, timeout_sec=timeout_sec)
    deadline = None if max_wait_sec is None else time.monotonic() + max_wait_sec
    told = False
    while True:
        try:
            lease.acquire()
            break
        except LeaseHeld as exc:
            if deadline is not None:
                if time.monotonic() > deadline:
                    raise
                if not told:
                    print(f"waiting for the lease of run {run_id}: {exc}".splitlines()[0], flush=True)
                    told = True
            time.sleep(min(1.0, heartbeat_sec))
    with lease:
        yield lease


def release_dead(run_id: str, pid: int) -> None:
    """Release the lease a child process of ours (`pid`, already reaped) held when it died."""
    state = read(run_id)
    me = this_process()
    if state.holder is not None and state.holder.host == me.host and state.holder.pid == pid \
            and state.heartbeat is not None:
        client.set_tags(run_id, {Tag.LEASE_HEARTBEAT: LEASE_RELEASED})
