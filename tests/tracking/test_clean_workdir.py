"""A command leaves the working directory as it found it: MLflow is the record. Checkpoints go to a
scratch folder in the cache, removed once logged; local copies are written only when asked
(`--local-copies`, under ./mlproject-outputs or $MLPROJECT_LOCAL_DIR; the original profile at the
original's paths); compare, ablate and tune get experiments named for the job, and a --resume still
finds a sweep made under the former default `gpt-<dataset>`."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from mlproject.cli import build_parser, main
from mlproject.protocol import parse_step_result
from helpers import write_sweep, write_tiny


def _conf(tmp_path: Path) -> Path:
    """The folder of the test's config files, beside the working directory."""
    (tmp_path / "conf").mkdir(exist_ok=True)
    return tmp_path / "conf"


def _defaults(path: Path, *keys: str) -> Path:
    """The config at `path` without tracking fields `keys`: the suite's defaults (and a profile's) decide them."""
    data = yaml.safe_load(path.read_text())
    for key in keys:
        data["tracking"].pop(key)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory; the test's config files live beside it, not in it."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def config(tmp_path: Path, experiment_name: str) -> Path:
    """The tiny train config with no output_dir: the suite's default places."""
    return _defaults(write_tiny(_conf(tmp_path) / "train.yaml", experiment_name), "output_dir")


def _artifacts(run_id: str, path: str) -> list[str]:
    return sorted(a.path for a in MlflowClient().list_artifacts(run_id, path))


def test_a_tracked_train_leaves_the_working_directory_empty_and_removes_its_scratch(workdir, config, cache_dir,
                                                                                      capsys):
    assert main(["train", "--config", str(config), "--run-name", "clean"]) == 0
    out = capsys.readouterr().out
    run_id = parse_step_result(out)["run_id"]
    assert _listing(workdir) == []
    assert not (cache_dir / "scratch" / run_id).exists(), "the scratch folder is removed once logged"
    assert _artifacts(run_id, "checkpoints") == ["checkpoints/best.pt", "checkpoints/last.pt"]
    assert "local checkpoints:" not in out and "local copies:" not in out


def test_local_copies_are_written_under_mlproject_outputs_when_asked(workdir, config, capsys):
    assert main(["train", "--config", str(config), "--run-name", "kept", "--local-copies"]) == 0
    assert "local copies: " in capsys.readouterr().out
    assert _listing(workdir) == ["mlproject-outputs", "mlproject-outputs/checkpoints",
                                 "mlproject-outputs/checkpoints/kept.best.pt",
                                 "mlproject-outputs/checkpoints/kept.last.pt",
                                 "mlproject-outputs/checkpoints/kept.tokenizer.json"]


def test_the_local_dir_variable_moves_the_copies_out_of_the_working_directory(workdir, config, tmp_path, monkeypatch):
    monkeypatch.setenv("MLPROJECT_LOCAL_DIR", str(tmp_path / "elsewhere"))
    assert main(["train", "--config", str(config), "--run-name", "moved", "--local-copies"]) == 0
    assert _listing(workdir) == []
    assert (tmp_path / "elsewhere" / "checkpoints" / "moved.last.pt").is_file()


def test_the_original_profile_writes_its_copies_where_the_original_suite_did(workdir, config):
    assert main(["train", "--config", str(config), "--run-name", "orig", "--profile", "original",
                 "--max-steps", "4", "--batch-size", "4"]) == 0
    listing = _listing(workdir)
    for name in ("checkpoints/orig.last.pt", "checkpoints/orig.best.pt", "checkpoints/orig.tokenizer.json",
                 "checkpoints/orig_history.pt", "checkpoints/orig_config.json"):
        assert name in listing, listing
    assert not any(p.startswith(("mlproject-outputs", "runs")) for p in listing), listing


def test_an_explicit_output_dir_keeps_the_checkpoints(workdir, config, tmp_path, capsys):
    kept = tmp_path / "mine"
    assert main(["train", "--config", str(config), "--output-dir", str(kept)]) == 0
    run_id = parse_step_result(capsys.readouterr().out)["run_id"]
    assert sorted(p.name for p in (kept / run_id / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert _listing(workdir) == []


def test_an_untracked_run_keeps_its_checkpoints_under_mlproject_outputs(workdir, config, capsys):
    assert main(["train", "--config", str(config), "--run-name", "offline", "--log-to-mlflow", "false"]) == 0
    assert "local checkpoints: mlproject-outputs/runs/offline/checkpoints" in capsys.readouterr().out
    assert (workdir / "mlproject-outputs" / "runs" / "offline" / "checkpoints" / "last.pt").is_file()


# ----------------------------------------------------------------------------- sweeps


@pytest.fixture
def sweep_yaml(tmp_path: Path):
    """A tiny sweep config in no experiment (the default), no output_dir."""
    def write(**sections) -> Path:
        return _defaults(write_sweep(_conf(tmp_path) / "sweep.yaml", "unused", **sections),
                         "output_dir", "experiment_name")
    return write


@pytest.fixture
def own_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store of this test alone: default experiment names are shared by every test of the session store."""
    uri = f"sqlite:///{tmp_path}/own.db"
    with pytest.MonkeyPatch.context() as mp:  # its experiments' artifacts go to ./mlruns of where it is made
        mp.chdir(tmp_path)
        MlflowClient(tracking_uri=uri).search_experiments()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.mark.parametrize(("command", "section", "experiment"), [
    ("compare", {"compare": {"models": ["gpt2"], "seeds": [1]}}, "compare-pydocs"),
    ("ablate", {"ablation": {"ablation_axis": "dropout", "ablation_values": [0.0, 0.1], "seeds": [1]}},
     "ablation-pydocs")])
def test_a_sweep_goes_to_an_experiment_named_for_the_job_and_leaves_the_working_directory_empty(
        workdir, sweep_yaml, own_store, capsys, command, section, experiment):
    assert main([command, "--config", str(sweep_yaml(**section))]) == 0
    out = capsys.readouterr().out
    result = parse_step_result(out)
    assert (result["status"], result["experiment_name"]) == ("FINISHED", experiment)
    assert _listing(workdir) == []
    assert {"results.jsonl", "results.csv", "summary.json"} <= {
        a.path for a in MlflowClient().list_artifacts(result["run_id"])}
    assert f"results: results.jsonl (logged to run {result['run_id']})" in out


def test_a_compare_with_local_copies_writes_its_results_copy_under_mlproject_outputs(workdir, sweep_yaml, own_store):
    assert main(["compare", "--config", str(sweep_yaml(compare={"models": ["gpt2"], "seeds": [1]})),
                 "--local-copies"]) == 0
    assert (workdir / "mlproject-outputs" / "research_runs" / "compare" / "compare-pydocs" / "results.csv").is_file()
    assert {p.split("/")[0] for p in _listing(workdir)} == {"mlproject-outputs"}


def test_resume_finds_a_sweep_made_under_the_former_default_experiment(workdir, sweep_yaml, own_store, capsys):
    config = str(sweep_yaml(compare={"models": ["gpt2", "gpt3"], "seeds": [1]}))
    # a sweep planned before compare had its own experiment: it went to gpt-<dataset>
    assert main(["compare", "--config", config, "--plan-only", "--experiment-name", "gpt-pydocs"]) == 0
    old = parse_step_result(capsys.readouterr().out)
    assert main(["compare", "--config", config, "--plan-only", "--resume"]) == 0
    out, err = capsys.readouterr()
    resumed = parse_step_result(out)
    assert (resumed["run_id"], resumed["experiment_name"]) == (old["run_id"], "gpt-pydocs")
    assert sorted(resumed["children"]) == sorted(old["children"])
    assert "continuing in experiment 'gpt-pydocs'" in err
    assert MlflowClient().get_experiment_by_name("compare-pydocs") is None, "no empty new experiment is left"
    # a new sweep (no --resume) goes to the job's own experiment
    assert main(["compare", "--config", config, "--plan-only"]) == 0
    assert parse_step_result(capsys.readouterr().out)["experiment_name"] == "compare-pydocs"


def test_tune_defaults_to_its_own_experiment_and_keeps_the_study_names_of_the_former_default(tmp_path):
    from mlproject.research.tune import TuneJob

    space = {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}
    path = _defaults(write_tiny(_conf(tmp_path) / "tune.yaml", "unused",
                                extra={"tune": {"n_trials": 2}, "search_space": space}), "output_dir", "experiment_name")
    default = TuneJob.load(path)
    assert default.experiment == "tune-pydocs"
    assert default.run.former_default_experiment == "gpt-pydocs"
    # the study a search made under the former default (gpt-pydocs) is the one a re-run continues
    former = TuneJob.load(path, build_parser().parse_args(["tune", "--config", str(path),
                                                          "--experiment-name", "gpt-pydocs"]))
    assert former.study_name == default.study_name
    assert former.run.former_default_experiment is None
