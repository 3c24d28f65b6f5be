"""Local side effects are guarded: a path that cannot be written is refused in one line before any
run exists; a local copy that fails after training says the run is safe; local copies are real
copies (never links into the cache); no temporary file survives a command; a pipeline step whose
config is missing leaves no run RUNNING."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from mlproject.cli import main
from mlproject.protocol import parse_step_result


def _runs() -> dict[str, str]:
    """run id -> status of every run in the store, in every experiment (deleted ones too)."""
    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments(view_type=3)]
    runs = client.search_runs(ids, run_view_type=3, max_results=50000) if ids else []
    return {r.info.run_id: r.info.status for r in runs}


def _refused(argv: list[str], capsys, *expected: str) -> str:
    """Run `argv`; assert exit code 2, one error line holding `expected`, and no new run."""
    before = _runs()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlproject: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err
    assert _runs() == before, "no run is created for a refused command"
    return err


@pytest.fixture
def afile(tmp_path: Path) -> Path:
    """A regular file where a folder would be expected."""
    path = tmp_path / "afile"
    path.write_text("user data\n")
    return path


def _temp_files(*roots: Path) -> list[Path]:
    """Every temporary a writer might leave under `roots`: the atomic writers' `.NAME.PID.HASH.tmp.SUFFIX`,
    the uploader's pinned `.NAME....upload`, any hidden file."""
    return [p for root in roots if root.exists() for p in root.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]


def test_a_run_name_too_long_for_its_local_copies_is_refused_before_training(tiny_yaml, capsys):
    _refused(["train", "--config", str(tiny_yaml()), "--run-name", "x" * 300, "--local-copies"], capsys,
             "run_name='xxxx", "(300 characters) is too long", "--run-name")


def test_a_local_dir_under_a_regular_file_is_refused_before_training(tiny_yaml, capsys, afile, monkeypatch):
    monkeypatch.setenv("MLPROJECT_LOCAL_DIR", str(afile / "local"))
    _refused(["train", "--config", str(tiny_yaml()), "--local-copies"], capsys,
             f"MLPROJECT_LOCAL_DIR='{afile}/local/checkpoints'", f"'{afile}' is a file, not a folder")
    assert afile.read_text() == "user data\n"


@pytest.mark.parametrize("command", ["compare", "ablate"])
def test_a_sweep_whose_results_copy_cannot_be_written_is_refused_before_its_parent_exists(
        tiny_yaml, capsys, afile, monkeypatch, command):
    monkeypatch.setenv("MLPROJECT_LOCAL_DIR", str(afile / "local"))
    _refused([command, "--config", str(tiny_yaml()), "--local-copies"], capsys,
             f"MLPROJECT_LOCAL_DIR='{afile}/local/research_runs/", f"'{afile}' is a file, not a folder")


def test_a_cache_dir_under_a_regular_file_is_refused_before_training(tiny_yaml, capsys, afile, monkeypatch):
    monkeypatch.setenv("MLPROJECT_CACHE_DIR", str(afile / "cache"))
    _refused(["train", "--config", str(tiny_yaml())], capsys,
             f"MLPROJECT_CACHE_DIR='{afile}/cache'", "is a file, not a folder")


def test_export_hf_into_a_folder_under_a_regular_file_is_refused(capsys, afile):
    _refused(["export-hf", "--checkpoint", "missing.pt", "--output", str(afile / "hf")], capsys,
             f"output='{afile}/hf'", f"'{afile}' is a file, not a folder")


def test_plot_into_a_folder_under_a_regular_file_is_refused(capsys, afile, tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text("")
    _refused(["plot", "--results", str(results), "--output-dir", str(afile / "plots")], capsys,
             f"output_dir='{afile}/plots'", "is a file, not a folder")
    assert afile.read_text() == "user data\n"


def test_a_failed_local_copy_after_training_says_the_finished_run_is_safe(tiny_yaml, capsys, tmp_path):
    # A folder where the tokenizer copy goes: the check before training passes, the copy fails.
    blocker = tmp_path / "mlproject-outputs" / "checkpoints" / "blocked.tokenizer.json"
    (blocker / "keep").mkdir(parents=True)
    assert main(["train", "--config", str(tiny_yaml()), "--run-name", "blocked", "--local-copies"]) == 2
    out, err = capsys.readouterr()
    result = parse_step_result(out)
    run_id = result["run_id"]
    assert result["status"] == "FINISHED" and _runs()[run_id] == "FINISHED"
    err = err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert f"run {run_id} is FINISHED and safe in the tracking store" in err
    assert "blocked.tokenizer.json" in err
    assert (blocker / "keep").is_dir()
    assert _temp_files(tmp_path / "mlproject-outputs") == []


def test_local_copies_are_real_copies_and_no_temporary_survives_a_resume(tiny_yaml, capsys, tmp_path, cache_dir):
    config = str(tiny_yaml())
    assert main(["train", "--config", config, "--run-name", "copies", "--local-copies"]) == 0
    run_id = parse_step_result(capsys.readouterr().out)["run_id"]
    assert main(["train", "--config", config, "--run-name", "copies", "--resume-from", run_id,
                 "--max-steps", "16", "--local-copies"]) == 0
    assert parse_step_result(capsys.readouterr().out)["status"] == "FINISHED"

    copy = tmp_path / "mlproject-outputs" / "checkpoints" / "copies.tokenizer.json"
    original = copy.read_bytes()
    cached = [p for p in (cache_dir / "tokenizers").rglob("*.json") if p.read_bytes() == original]
    assert cached, "the copy is of a cached tokenizer"
    for path in (copy, *copy.parent.glob("copies.*.pt")):
        assert path.stat().st_nlink == 1, f"{path} is a hard link"
    assert all(p.stat().st_ino != copy.stat().st_ino for p in cached)
    with copy.open("r+b") as f:  # an edit in place, as an editor that rewrites the file would not
        f.write(b"{}  ")
    assert all(p.read_bytes() == original for p in cached), "editing the copy changed the cache"
    assert _temp_files(copy.parent, tmp_path / "runs") == []


def test_a_pipeline_step_whose_config_is_missing_leaves_no_run_running(tmp_path, experiment_name, capsys):
    from mlproject.orchestration.config import PipelineOptions
    from mlproject.orchestration.runner import run_pipeline

    missing = tmp_path / "missing.yaml"
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({
        "pipeline": {"name": "missingconfig", "experiment_name": experiment_name},
        "steps": [{"id": "train", "entry_point": "train", "experiment_name": experiment_name,
                   "parameters": {"config": str(missing)}}]}, sort_keys=False))
    before = _runs()
    assert run_pipeline(PipelineOptions(str(path))) == 1
    new = {run_id: status for run_id, status in _runs().items() if run_id not in before}
    assert "RUNNING" not in new.values(), new
    assert list(new.values()) == ["FAILED"], "only the pipeline's own run, ended FAILED"
    (report_path,) = tmp_path.glob("mlproject-outputs/pipeline_runs/*/report.json")
    step = json.loads(report_path.read_text())["steps"][0]
    assert step["status"] == "failed" and f"config='{missing}' is not a file" in step["error_tail"]
