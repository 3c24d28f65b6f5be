#!/usr/bin/env python
"""Entry point of the step image: run a step command, then print its result line last.

    mlproject-step mlflow run /app -e compare --env-manager local -P config=...
    mlproject-step mlproject plot --parent-run-id ...

Airflow's DockerOperator pushes the container's last log line to XCom, and `mlflow run`
logs its own "Run ... succeeded" line after the step printed `MLPROJECT_RESULT {json}`. So
the command's output (stdout and stderr, merged in order) passes through unchanged, and the
last MLPROJECT_RESULT line it printed is printed once more at the end, where the DAG's
downstream tasks read it (`mlproject.protocol.parse_step_result`).

SIGTERM/SIGINT (`docker stop`, Airflow's on_kill) are forwarded to the command, so MLflow
can mark its runs KILLED before the container exits.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from mlproject.protocol import parse_step_result


def main(argv: list[str]) -> int:
    if not argv:
        argv = ["mlproject", "--help"]
    try:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, errors="replace", bufsize=1)
    except FileNotFoundError:
        print(f"mlproject-step: command not found: {argv[0]}", file=sys.stderr)
        return 127
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    result_line = None
    assert child.stdout is not None
    for line in child.stdout:
        sys.stdout.write(line)
        if parse_step_result(line) is not None:
            result_line = line.rstrip("\n")
    code = child.wait()
    if result_line is not None:
        sys.stdout.write(result_line + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
