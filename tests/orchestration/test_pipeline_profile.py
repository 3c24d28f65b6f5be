"""`pipeline --profile original`: every step runs in the original profile (its commands read
MLPROJECT_PROFILE from the environment the runner hands them); without the flag the steps get
the pipeline's own environment."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from mlproject.cli import main
from test_pipeline_runner import STEPS, store_uri, tracking_env, write_pipeline  # noqa: F401 (fixtures)

# A fake `mlflow` that records the profile its step would run in.
FAKE = textwrap.dedent('''\
    import json, os, sys
    args = sys.argv[1:]
    entry_point = args[args.index("-e") + 1]
    with open(os.environ["PROFILE_LOG"], "a") as log:
        log.write(entry_point + " " + os.environ.get("MLPROJECT_PROFILE", "unset") + "\\n")
    print("MLPROJECT_RESULT " + json.dumps({"step": entry_point, "run_id": "run-" + entry_point,
                                            "status": "FINISHED"}))
''')


@pytest.fixture
def profiles_seen(tracking_env, tmp_path, monkeypatch):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "mlflow").write_text(f"#!{sys.executable}\n{FAKE}")
    (bin_dir / "mlflow").chmod(0o755)
    log = tmp_path / "profiles.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PROFILE_LOG", str(log))
    monkeypatch.setenv("MLPROJECT_PROFILE", "default")  # recorded, so what `--profile` sets is undone after
    monkeypatch.delenv("MLPROJECT_PROFILE")
    return lambda: log.read_text().splitlines() if log.exists() else []


def test_pipeline_profile_original_runs_every_step_in_the_original_profile(profiles_seen, tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    assert main(["pipeline", "--config", str(path), "--profile", "original"]) == 0
    assert profiles_seen() == ["compare original", "plot original"]


def test_pipeline_without_profile_leaves_the_steps_environment_alone(profiles_seen, tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    assert main(["pipeline", "--config", str(path)]) == 0
    assert profiles_seen() == ["compare unset", "plot unset"]
