"""Where a sweep child's output goes: its run's `logs/train.log` always, the console only when asked.

A 4-child compare used to print ~100 lines: every child's header twice, its data lines, every
progress line and its own result lines, interleaved. By default the console now gets one line
as a child starts and one as it ends, with its figure; the whole output is the child run's
`logs/train.log` artifact (where a researcher looks for one child's story), and also
`--log-file` when given. `--verbose` (`-v`) prints it all again, each line prefixed with the
child's name.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from mlproject.secrets import scrub

_FILE_LOCK = threading.Lock()  # parallel children's pump threads append to one --log-file


@dataclass
class ChildOutput:
    """The sweep's policy for its children's output."""

    verbose: bool = False
    log_file: str | None = None
    metric: str | None = None  # the figure the end line shows (the sweep's first metric)
    started: dict[str, float] = field(default_factory=dict)

    def line(self, name: str, text: str, log: TextIO) -> None:
        """One line (with its newline) of child `name`'s output: to its log, and as asked."""
        text = scrub(text)  # the log becomes an artifact, the console a CI log
        log.write(text)
        if self.verbose:
            print(f"[{name}] {text}", end="", flush=True)
        if self.log_file:
            with _FILE_LOCK, open(self.log_file, "a", encoding="utf-8") as out:
                out.write(f"[{name}] {text}")

    def start(self, name: str, action: str, run_id: str, position: str = "") -> None:
        self.started[name] = time.monotonic()
        print(f"started {name} ({action}{position}) run {run_id}", flush=True)

    def end(self, name: str, run_id: str, status: str, note: str = "") -> None:
        """`finished gpt2-s42: FINISHED, val_loss_best 5.4321 (3m12s)`."""
        from mlproject.tracking.queries import get_run

        figure = ""
        if self.metric:
            value = get_run(run_id).metrics.get(self.metric)
            if value is not None and math.isfinite(value):
                figure = f", {self.metric} {value:.4f}"
        seconds = time.monotonic() - self.started.pop(name, time.monotonic())
        details = ", ".join(filter(None, [_duration(seconds), note]))
        print(f"finished {name}: {status}{figure} ({details})", flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class _LineStream(io.TextIOBase):
    """A text stream that hands each complete line to `ChildOutput.line` (stdout/stderr of an
    in-process child)."""

    def __init__(self, output: ChildOutput, name: str, log: TextIO) -> None:
        self.output, self.name, self.log, self.pending = output, name, log, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.output.line(self.name, line + "\n", self.log)
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def close_line(self) -> None:
        if self.pending:
            self.output.line(self.name, self.pending + "\n", self.log)
            self.pending = ""


@contextlib.contextmanager
def captured(output: ChildOutput, name: str, log: Path) -> Iterator[None]:
    """Run the block (an in-process child's training) with its stdout and stderr going to
    `log` and, as `output` says, the console: what a child process's output does."""
    with log.open("w", encoding="utf-8") as out:
        stream = _LineStream(output, name, out)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield
        finally:
            stream.close_line()
            sys.stdout.flush()
