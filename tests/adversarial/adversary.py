"""The harness of the adversarial suite: one hostile or careless command line (a `Case`), run
in this process through `mlproject.cli.main`, and the promises every case must keep.

A case ends either in success (exit code 0) or in one error line: a non-zero exit code and a
last non-empty stderr line that names the bad value. Whatever it does, it prints no traceback
and no credential (a password in the tracking URI, a token in the environment), leaves no run
RUNNING and turns no existing run FAILED, and changes no file of the user's folder.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Credentials a careless user has in the environment or the URI: neither may reach any output.
PASSWORD = "S3cr3tPw"
TOKEN = "tok-adv-7c1d9e0f"
# A server that is not there (port 9, discard), with a password in its URI: the command fails
# at once (no retries) and its message must still not carry the password.
SECRET_URI = f"http://alice:{PASSWORD}@127.0.0.1:9/"
FTP_URI = f"ftp://carol:{PASSWORD}@127.0.0.1/x"  # a scheme MLflow has no store for
# What an atomic write or a writability probe names its temporary: none may survive a command.
TEMP_NAME = re.compile(r"\.tmp(\.|$)|^\.mlproject-probe-|\.partial$")


@dataclass(frozen=True)
class Case:
    """One command line and what it must end in.

    `argv` items are formatted with the world's places (`{user}`, `{ckpt}`, `{run_id}`, ...).
    `names`: text the last error line must hold (the bad value; a tuple: each of them), or None
    for a success.
    `code`: the exit code expected (None: any non-zero for an error). `env`: variables set for
    this case only (formatted too). `new_failed`: the command may leave a FAILED run of its own
    (a run that really failed, such as a non-finite loss), never an existing run turned FAILED.
    `changes`: the existing run ids (formatted) whose status this command may change (a resume).
    """

    id: str
    argv: tuple[str, ...]
    names: str | tuple[str, ...] | None = None
    code: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    new_failed: bool = False
    changes: tuple[str, ...] = ()

    def param(self, *marks: pytest.MarkDecorator) -> object:
        return pytest.param(self, id=self.id, marks=marks)


def err(id: str, *argv: str, names: str | tuple[str, ...], code: int | None = None, **kw: object) -> Case:
    return Case(id, tuple(argv), names=names, code=code, **kw)  # type: ignore[arg-type]


def ok(id: str, *argv: str, **kw: object) -> Case:
    return Case(id, tuple(argv), names=None, code=0, **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- snapshots

def snapshot_files(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under `root` (hidden ones too): relative path -> (size, mtime_ns, sha256)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            out[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns,
                                                hashlib.sha256(path.read_bytes()).hexdigest())
        elif path.is_dir() and not any(path.iterdir()):
            out[f"{path.relative_to(root)}/"] = (0, 0, "empty folder")
    return out


def run_statuses(store_uri: str) -> dict[str, str]:
    """Every run of the store (all experiments, deleted ones too): run id -> status."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store_uri)
    ids = [e.experiment_id for e in client.search_experiments(view_type=3)]
    runs = client.search_runs(ids, run_view_type=3, max_results=50000) if ids else []
    return {run.info.run_id: run.info.status for run in runs}


# ----------------------------------------------------------------------------- running a case

@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def last_line(self) -> str:
        lines = [line for line in self.err.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def call_main(argv: list[str]) -> int:
    """`mlproject.cli.main(argv)` as the console script ends: argparse's exit read as its code."""
    from mlproject.cli import main

    try:
        return main(argv)
    except SystemExit as exc:  # argparse: bad flags and --help
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def set_case_env(mp: pytest.MonkeyPatch, env: Mapping[str, str]) -> None:
    """Set `env` for one case; a tracking URI reaches MLflow's module state as well as the
    environment (the fixtures set the session store there)."""
    import mlflow

    for name, value in env.items():
        mp.setenv(name, value)
    if "MLFLOW_TRACKING_URI" in env:
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])


def run_case(case: Case, places: Mapping[str, str], *, user: Path, store_uri: str,
             capfd: pytest.CaptureFixture) -> Result:
    """Run `case` and assert every promise of the suite; the result for case-specific checks."""
    import mlflow

    argv = [arg.format(**places) for arg in case.argv]
    files_before, runs_before = snapshot_files(user), run_statuses(store_uri)
    with pytest.MonkeyPatch.context() as inner:
        set_case_env(inner, {name: value.format(**places) for name, value in case.env.items()})
        capfd.readouterr()
        code = call_main(argv)
        result = Result(code, *capfd.readouterr())
        while mlflow.active_run() is not None:  # a command must end the runs it started
            mlflow.end_run()
            pytest.fail(f"{argv} left an active MLflow run in the process")
    mlflow.set_tracking_uri(store_uri)
    check_output(case, result, places)
    check_runs(case, result, runs_before, run_statuses(store_uri), places)
    assert snapshot_files(user) == files_before, f"{argv} changed the user's files"
    assert not leftovers(Path.cwd()), f"{argv} left temporary files behind: {leftovers(Path.cwd())}"
    return result


def leftovers(folder: Path) -> list[str]:
    """Temporary files or probe folders under `folder` that a finished command should have removed."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if TEMP_NAME.search(p.name))


def check_output(case: Case, result: Result, places: Mapping[str, str]) -> None:
    shown = result.text[-3000:]
    assert "Traceback" not in result.text, shown
    assert PASSWORD not in result.text and TOKEN not in result.text, shown
    if case.names is None:
        assert result.code == 0, shown
        return
    assert result.code != 0, f"bad input accepted (exit 0): {shown}"
    if case.code is not None:
        assert result.code == case.code, shown
    assert result.last_line.startswith("mlproject"), shown
    for text in (case.names,) if isinstance(case.names, str) else case.names:
        names = text.format(**places)
        assert names in result.last_line, f"the error does not name {names!r}: {result.last_line}"


def check_runs(case: Case, result: Result, before: dict[str, str], after: dict[str, str],
               places: Mapping[str, str]) -> None:
    may_change = {run_id.format(**places) for run_id in case.changes}
    for run_id, status in before.items():
        if run_id not in may_change:
            assert after.get(run_id) == status, f"run {run_id} went from {status} to {after.get(run_id)}"
    new = {run_id: status for run_id, status in after.items() if run_id not in before}
    changed = {run_id: after[run_id] for run_id in may_change if run_id in after}
    assert "RUNNING" not in {**new, **changed}.values(), f"a run left RUNNING: {new} {changed}"
    if result.code == 2:  # bad input is refused before any run exists
        assert not new, f"bad input created runs: {new}"
    if not case.new_failed:
        assert "FAILED" not in {**new, **changed}.values(), f"a run wrongly FAILED: {new} {changed}"
