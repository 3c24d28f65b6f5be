"""Helpers of the original-suite tests: the repository, the size overrides, a command runner."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from helpers import TINY_DATA, TINY_MODEL


def _flags(values: dict) -> str:
    return " ".join(f"--{key.replace('_', '-')} {value}" for key, value in values.items())


# Appended to a dataloaders command: the sizes of the data that every test shares.
DATA_SHRINK = _flags({k: v for k, v in TINY_DATA.items() if k != "dataset"})
# Appended to an original command: the same command at a size two CPU cores train in seconds.
# Later flags win, so these override the original's sizes without editing them.
SHRINK = f"{_flags(TINY_MODEL)} --batch-size 4 --max-steps 4 --eval-batches 2 {DATA_SHRINK}"


@dataclass
class Ran:
    """A finished command: exit code and output (stdout and stderr together)."""

    cmd: list[str]
    returncode: int
    output: str

    def line(self, prefix: str) -> str:
        """The value after `prefix` on the last output line that starts with it (a sweep's own
        MLPROJECT_RESULT line comes after its children's)."""
        for line in reversed(self.output.splitlines()):
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        raise AssertionError(f"no line starting with {prefix!r} in:\n{self.output}")


class Shell:
    """Runs README commands (written as one string, with the README's line continuations)."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir, self.env = workdir, env

    def run(self, command: str, *, cwd: Path | None = None, check: bool = True, extra_env: dict | None = None,
            timeout: float = 600) -> Ran:
        cmd = shlex.split(command.replace("\\\n", " "))
        proc = subprocess.run(cmd, cwd=cwd or self.workdir, env={**self.env, **(extra_env or {})},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        ran = Ran(cmd, proc.returncode, proc.stdout)
        if check:
            assert proc.returncode == 0, f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-4000:]}"
        return ran
