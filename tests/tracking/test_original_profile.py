"""The original profile on a tracked run: its defaults under the YAML file and the flags, the
profile tag, its local files (config JSON, history, checkpoint names) and `--preview-every`'s
logged samples; the environment variable means the same, and an explicit flag wins over it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from mlproject.cli import main
from mlproject.model.checkpoint import load_checkpoint
from mlproject.schema import Artifact, Tag

STEPS = ["--max-steps", "6", "--eval-interval", "3", "--log-model", "false"]


def _run(name: str):
    client = MlflowClient()
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                f"attributes.run_name = '{name}'")
    return run


def test_the_original_profile_trains_with_its_defaults_tags_the_run_and_writes_its_files(tiny_yaml, tmp_path):
    path = tiny_yaml()
    assert main(["train", "--config", str(path), "--profile", "original", "--run-name", "orig-run",
                 "--preview-every", "3", *STEPS]) == 0
    run = _run("orig-run")
    assert run.data.tags[Tag.PROFILE] == "original"
    params = run.data.params
    # the original's defaults where neither the YAML file nor a flag sets the field
    assert (params["model.dropout"], params["model.attention_impl"], params["model.gelu_approximate"]) == (
        "0.1", "manual", "none")
    assert (params["train.learning_rate"], params["train.precision"], params["train.min_lr_ratio"]) == (
        "0.0003", "fp32", "0.0")
    assert params["model.n_layer"] == "2"  # the YAML file wins over the profile
    out = tmp_path / "runs"  # the file's tracking.output_dir
    config = json.loads((out / "orig-run_config.json").read_text())
    assert (config["run_name"], config["base_lr"], config["dropout"], config["block_size"]) == (
        "orig-run", 3e-4, 0.1, 32)
    history = torch.load(out / "orig-run_history.pt", weights_only=True)
    assert history["global_steps"] == 6 and history["val_step"] == [3, 6] and len(history["val_loss"]) == 2
    assert history["train_ppl"][-1] == pytest.approx(float(torch.tensor(history["train_loss"][-1]).exp()))
    for name in ("orig-run.pt", "orig-run.last.pt"):
        assert load_checkpoint(out / name)["model"]  # this suite's checkpoint under the original's names
    previews = [a.path for a in MlflowClient().list_artifacts(run.info.run_id, Artifact.PREVIEWS)]
    assert previews == [f"{Artifact.PREVIEWS}/step_0000003.txt", f"{Artifact.PREVIEWS}/step_0000006.txt"]
    text = MlflowClient().download_artifacts(run.info.run_id, previews[-1], str(tmp_path))
    assert "CTX: " in Path(text).read_text()


def test_the_environment_selects_the_profile_and_an_explicit_flag_wins(tiny_yaml, tmp_path, monkeypatch):
    path = tiny_yaml()
    monkeypatch.setenv("MLPROJECT_PROFILE", "original")
    assert main(["train", "--config", str(path), "--run-name", "env-run", *STEPS]) == 0
    assert main(["train", "--config", str(path), "--run-name", "flag-run", "--profile", "default", *STEPS]) == 0
    env_run, flag_run = _run("env-run"), _run("flag-run")
    assert env_run.data.tags[Tag.PROFILE] == "original" and env_run.data.params["model.dropout"] == "0.1"
    assert flag_run.data.tags[Tag.PROFILE] == "default" and flag_run.data.params["model.dropout"] == "0.0"
    assert (tmp_path / "runs" / "env-run_config.json").is_file()
    assert not list((tmp_path / "runs").glob("flag-run*"))  # plain commands write only this suite's files


def test_a_bad_profile_in_the_environment_is_a_one_line_error(tiny_yaml, monkeypatch, capsys):
    monkeypatch.setenv("MLPROJECT_PROFILE", "legacy")
    assert main(["train", "--config", str(tiny_yaml())]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MLPROJECT_PROFILE='legacy'" in err and "default, original" in err


def test_ckpt_name_history_path_and_config_path_name_the_files(tiny_yaml, tmp_path):
    assert main(["train", "--config", str(tiny_yaml()), "--run-name", "named", "--ckpt-name", "mine.pt",
                 "--history-path", str(tmp_path / "h.pt"), "--config-path", str(tmp_path / "c.json"), *STEPS]) == 0
    out = tmp_path / "runs"
    assert (out / "mine.pt").is_file() and (out / "mine.last.pt").is_file()
    assert torch.load(tmp_path / "h.pt", weights_only=True)["global_steps"] == 6
    assert json.loads((tmp_path / "c.json").read_text())["run_name"] == "named"
