"""A sweep is quiet by default: one line as each child starts and one as it ends (with its
figure), the table and the result; each child's whole output is its run's logs/train.log,
`--log-file` collects them all and `-v` prints them again, prefixed."""

from __future__ import annotations

import contextlib
import io
import os
import re

from mlflow import MlflowClient

from helpers import children_of, unique, write_sweep
from mlproject.cli import QUIET_PROGRESS_ENV, main, quiet_progress_bars

# What a child's training prints and the sweep's console must not show by default.
CHILD_LINES = re.compile(r"^(\[\S+\] )?(step \d+/\d+|training [\d.]+[KM]? parameters|MLPROJECT_RESULT \{\"step\": \"train\"|"
                         r"--- child|tracking: )")


def _log_of(run_id: str, tmp_path) -> str:
    folder = MlflowClient().download_artifacts(run_id, "logs", str(tmp_path))
    return open(os.path.join(folder, "train.log"), encoding="utf-8").read()


def test_a_four_child_compare_prints_a_line_per_child_start_and_end(compare_sweep, research_env, tmp_path):
    outcome, out = compare_sweep
    lines = out.splitlines()
    assert not [line for line in lines if CHILD_LINES.match(line)]
    starts = [line for line in lines if line.startswith("started ")]
    ends = [line for line in lines if line.startswith("finished ")]
    assert [s.split()[1] for s in starts] == ["gpt2-s1", "gpt3-s1", "gpt2-s2", "gpt3-s2"]
    children = {c.info.run_name: c for c in children_of(outcome.parent_run_id)}
    for end in ends:  # `finished gpt2-s1: FINISHED, val_loss_best 5.4321 (12s)`: the child's own figure
        name, value = re.match(r"finished (\S+): FINISHED, val_loss_best ([\d.]+) \(", end).groups()
        assert float(value) == round(children[name].data.metrics["val_loss_best"], 4)
    assert len(ends) == 4
    assert len(lines) <= 35, out  # the plan, 8 child lines, the summary table and the result
    log = _log_of(children["gpt3-s2"].info.run_id, tmp_path)  # the whole story is on the child's run
    assert re.search(r"^step \d+/\d+ \| loss", log, re.M) and "MLPROJECT_RESULT" in log


def test_verbose_prints_every_child_line_prefixed_and_log_file_collects_them(session_env, research_env, tmp_path):
    path = write_sweep(session_env / "verbose.yaml", unique("quiet"),
                       extra={"compare": {"models": ["gpt2", "gpt3"], "seeds": [5], "parallel": 2}})
    log_file = tmp_path / "children.log"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["compare", "--config", str(path), "-v", "--log-file", str(log_file)]) == 0
    printed = out.getvalue()
    assert re.search(r"^\[gpt2-s5\] step \d+/\d+", printed, re.M)
    assert re.search(r"^\[gpt3-s5\] step \d+/\d+", printed, re.M)
    collected = log_file.read_text()
    for name in ("gpt2-s5", "gpt3-s5"):  # both processes' lines, whole, each prefixed with its child
        assert re.search(rf"^\[{name}\] MLPROJECT_RESULT ", collected, re.M)
    assert "Downloading artifacts" not in printed + collected  # the children's stdout is no terminal


def test_third_party_progress_bars_are_off_unless_stdout_is_a_terminal(monkeypatch):
    for name in QUIET_PROGRESS_ENV:
        monkeypatch.delenv(name, raising=False)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    quiet_progress_bars(Terminal())
    assert not any(name in os.environ for name in QUIET_PROGRESS_ENV)
    monkeypatch.setenv("TQDM_DISABLE", "0")  # the user's own choice wins
    quiet_progress_bars(io.StringIO())
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["TQDM_DISABLE"] == "0"
