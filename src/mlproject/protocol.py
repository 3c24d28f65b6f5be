"""How steps talk to each other: the run a process is handed, and the result line it prints.

A process is handed the MLflow run it logs into through `MLFLOW_RUN_ID` (`mlflow run` sets it;
a sweep sets it for each child process); `process_run_id` is the one place that reads it and
`hand_run_to` the one place that writes it into a child's environment.

Every step prints, as its last line, `MLPROJECT_RESULT {json}` with at least `step` and
`run_id` (the MLflow run it logged into). The local pipeline runner and the Airflow DAG parse
it to fill `{{ steps.<id>.<field> }}` in later steps; the step image's entry point prints it
once more at the very end, after `mlflow run`'s own output, where the DAG's XCom reads it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RESULT_PREFIX = "MLPROJECT_RESULT"
RUN_ID_ENV = "MLFLOW_RUN_ID"
EXPERIMENT_ID_ENV = "MLFLOW_EXPERIMENT_ID"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
# The last result this process reported: the run `mlflow run` made (when the step logged
# elsewhere) is deleted at the end with a link to the run the step names here.
_last_result: dict[str, Any] = {}


def process_run_id() -> str | None:
    """The run this process was handed (`MLFLOW_RUN_ID`), if any."""
    return os.environ.get(RUN_ID_ENV) or None


def hand_run_to(base: Mapping[str, str], run_id: str | None) -> dict[str, str]:
    """A copy of the environment `base` for a child process that logs into `run_id` (None: into
    a run of its own). The handed experiment goes too: it would fight the child's own
    `--experiment-name`."""
    env = {k: v for k, v in base.items() if k not in (RUN_ID_ENV, EXPERIMENT_ID_ENV)}
    if run_id is not None:
        env[RUN_ID_ENV] = run_id
    return env


def is_run_id(text: str) -> bool:
    """True for a 32-hex-digit MLflow run id (and not an existing local file of that name)."""
    return bool(_RUN_ID.match(text)) and not Path(text).exists()


_released: list[str] = []  # the run this process was handed and released (it ran under `mlflow run`)


def release_process_run() -> None:
    """Forget the handed run: later runs of this process are new ones."""
    released = os.environ.pop(RUN_ID_ENV, None)
    if released:
        _released.append(released)


def was_handed_a_run() -> bool:
    """Whether this process was handed a run (`mlflow run` hands one), released since or not."""
    return process_run_id() is not None or bool(_released)


def result_line(result: Mapping[str, Any]) -> str:
    """`MLPROJECT_RESULT {json}` for `result` (a step's fields: step, run_id, status, ...)."""
    _last_result.clear()
    _last_result.update(result)
    return f"{RESULT_PREFIX} {json.dumps(dict(result))}"


def last_result() -> dict[str, Any]:
    """The fields of the last `result_line` this process made (empty before the first)."""
    return dict(_last_result)


def forget_result() -> None:
    """Start a new command: `last_result` is empty until it reports."""
    _last_result.clear()


def parse_step_result(output: str) -> dict[str, Any] | None:
    """The JSON of the last `MLPROJECT_RESULT {...}` line in a step's output (None if there is none)."""
    for line in reversed(output.splitlines()):
        start = line.find(RESULT_PREFIX + " ")
        if start < 0:
            continue
        try:
            result = json.loads(line[start + len(RESULT_PREFIX) + 1:])
        except json.JSONDecodeError:
            continue
        if isinstance(result, dict):
            return result
    return None
