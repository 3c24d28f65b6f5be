"""SIGTERM as an interrupt outside the trainer: a step terminated while it prepares data or
uploads ends KILLED instead of staying RUNNING forever."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the trainer's own handler (data preparation, uploads): end as KILLED."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` while the block runs (main thread only).

    The trainer installs its own handler while it trains (finish the step, write a checkpoint,
    return "interrupted"); this one covers the rest of the step, so a run terminated while it
    prepares data or uploads ends KILLED instead of staying RUNNING forever.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
