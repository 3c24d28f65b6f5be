"""The original suite's config files read as written: step files become a subcommand and its
flags by the original's rules, pipeline files become steps in file order run in its
project_root, and its `execution_<stamp>.json` report is written beside the suite's.

Pipeline steps run a fake `mlproject` (first on PATH) that records its arguments, working
directory and environment, so these tests exercise the conversion and the runner, not training.
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from mlproject import cli
from mlproject.errors import ConfigError
from mlproject.orchestration.config import PipelineOptions
from mlproject.orchestration.graph import load_pipeline
from mlproject.orchestration.original_format import (OriginalStep, args_argv, expand_cli_argv, step_argv,
                                                     subcommand)
from mlproject.orchestration.runner import run_pipeline
from mlproject.orchestration.steps import step_command, sweep_stage_command

ORIGINAL_REPORT_KEYS = ["pipeline_config", "project_root", "run_dir", "run_name", "dry_run", "results", "finished_at"]
ORIGINAL_RESULT_KEYS = ["step_id", "command", "returncode", "status", "started_at", "finished_at"]


def known(*flags: str):
    """A `known_flags` that accepts exactly `flags` for every subcommand."""
    return lambda command: {f"--{f}" for f in flags}


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- step files: the rules

def test_a_value_becomes_the_flag_and_its_text():
    assert args_argv({"n-layer": 8, "base-lr": 0.0003, "dataset": "small"}, "f") == [
        "--n-layer", "8", "--base-lr", "0.0003", "--dataset", "small"]


def test_null_is_left_out():
    assert args_argv({"tokenizer-path": None, "epochs": 3}, "f") == ["--epochs", "3"]


def test_true_is_the_bare_flag():
    assert args_argv({"val-checking": True}, "f") == ["--val-checking"]


def test_false_is_left_out_so_amp_false_means_fp32():
    assert args_argv({"amp": False, "device": "cpu"}, "f") == ["--device", "cpu"]


def test_a_list_is_the_flag_followed_by_each_item():
    assert args_argv({"seeds": [42, 43], "ablation-values": ["layernorm", "rmsnorm"]}, "f") == [
        "--seeds", "42", "43", "--ablation-values", "layernorm", "rmsnorm"]


def test_a_mapping_value_is_a_one_line_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"^f: args\.model is a mapping"):
        args_argv({"model": {"n-layer": 2}}, "f")


@pytest.mark.parametrize("script,command", [
    ("scripts/train.py", "train"), ("scripts/compare_models.py", "compare"), ("scripts/run_ablations.py", "ablate"),
    ("scripts/plot_results.py", "plot"), ("scripts/generate.py", "generate"), ("/abs/repo/scripts/train.py", "train"),
])
def test_each_script_maps_to_its_subcommand(script, command):
    assert subcommand(script, "f") == command


def test_an_unknown_script_is_a_one_line_error_naming_it():
    with pytest.raises(ConfigError, match=r"^f: unknown script 'scripts/finetune\.py'; expected one of "
                                          r"scripts/train\.py, .*scripts/plot_results\.py") as err:
        subcommand("scripts/finetune.py", "f")
    assert "\n" not in str(err.value)


def test_the_step_argv_ends_with_the_original_profile():
    data = {"name": "ignored", "script": "scripts/run_ablations.py",
            "args": {"ablation-axis": "norm_type", "ablation-values": ["layernorm", "rmsnorm"], "amp": False}}
    assert step_argv(data, "f") == ("ablate", ["--ablation-axis", "norm_type", "--ablation-values", "layernorm",
                                               "rmsnorm", "--profile", "original"])


def test_an_unknown_flag_is_a_one_line_error_naming_the_key():
    data = {"script": "scripts/train.py", "args": {"epochs": 3, "n-layers": 8}}
    with pytest.raises(ConfigError, match=r"^f: unknown key args\.n-layers: `mlproject train` has no flag "
                                          r"--n-layers \(did you mean --n-layer\?\)"):
        step_argv(data, "f", known("epochs", "n-layer"))


def test_a_false_key_is_checked_too():
    with pytest.raises(ConfigError, match=r"args\.amd"):
        step_argv({"script": "scripts/train.py", "args": {"amd": False}}, "f", known("amp"))


def test_keys_are_checked_against_the_real_cli_flags():
    data = {"script": "scripts/compare_models.py", "args": {"models": ["gpt2", "gpt3"], "seedz": [1]}}
    with pytest.raises(ConfigError, match=r"unknown key args\.seedz: `mlproject compare` has no flag --seedz"):
        step_argv(data, "f", cli.known_flags)
    assert step_argv({"script": "scripts/compare_models.py", "args": {"models": ["gpt2"]}}, "f",
                     cli.known_flags)[0] == "compare"


# ----------------------------------------------------------------------------- the CLI's --config

@pytest.fixture
def compare_file(tmp_path: Path) -> Path:
    return write(tmp_path / "compare.yaml", {"name": "c", "script": "scripts/compare_models.py",
                                             "args": {"dataset": "small", "seeds": [42, 43], "val-checking": True}})


def test_cli_flags_after_the_config_come_last_so_they_override_the_file(compare_file):
    argv = ["compare", "--config", str(compare_file), "--dataset", "pydocs"]
    assert expand_cli_argv(argv, cli.known_flags) == [
        "compare", "--dataset", "small", "--seeds", "42", "43", "--val-checking", "--profile", "original",
        "--dataset", "pydocs"]


def test_flags_before_the_config_also_override_it(compare_file):
    argv = ["compare", "--seeds", "7", f"--config={compare_file}"]
    assert expand_cli_argv(argv, cli.known_flags)[-2:] == ["--seeds", "7"]


def test_the_suites_own_configs_and_missing_files_pass_through_unchanged(tmp_path):
    own = write(tmp_path / "own.yaml", {"train": {"max_steps": 3}})
    for argv in (["train", "--config", str(own)], ["train", "--config", str(tmp_path / "nope.yaml")], ["train"]):
        assert expand_cli_argv(argv, cli.known_flags) == argv


def test_a_step_file_under_another_subcommand_is_a_one_line_error(compare_file):
    with pytest.raises(ConfigError, match=r"config of the original scripts/compare_models\.py, which is "
                                          r"`mlproject compare`; run `mlproject compare --config"):
        expand_cli_argv(["train", "--config", str(compare_file)], cli.known_flags)


def test_the_cli_refuses_an_unknown_key_in_one_line_before_any_run(tmp_path, capsys):
    path = write(tmp_path / "t.yaml", {"script": "scripts/train.py", "args": {"epochz": 3}})
    assert cli.main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlproject: error: ") and "args.epochz" in err and "\n" not in err
    assert not (tmp_path / "mlflow.db").exists()


def test_the_cli_refuses_an_unknown_script_in_one_line(tmp_path, capsys):
    path = write(tmp_path / "t.yaml", {"script": "scripts/finetune.py", "args": {}})
    assert cli.main(["train", "--config", str(path)]) == 2
    assert "unknown script 'scripts/finetune.py'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- pipeline files

@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An original project: two step files and a pipeline with a disabled and an inline step."""
    root = tmp_path / "project"
    write(root / "configs/train/t.yaml", {"name": "t", "script": "scripts/train.py",
                                          "args": {"run-name": "first", "max-steps": 3, "amp": False}})
    write(root / "configs/plot/p.yaml", {"name": "p", "script": "scripts/plot_results.py",
                                         "args": {"results": ["runs/a.jsonl", "runs/b.jsonl"], "kind": "compare"}})
    write(root / "configs/pipeline/pipe.yaml", {
        "name": "pipe", "project_root": ".", "env": {"PYTHONUNBUFFERED": "1", "WORKERS": 2, "FLAG": True},
        "steps": [{"id": "train", "enabled": True, "config": "configs/train/t.yaml"},
                  {"id": "off", "enabled": False, "config": "configs/train/t.yaml"},
                  {"id": "inline", "script": "scripts/compare_models.py", "args": {"seeds": [1, 2]}},
                  {"id": "plot", "config": "configs/plot/p.yaml"}]})
    return root


def test_pipeline_steps_keep_file_order_each_after_the_enabled_one_before(project, monkeypatch):
    monkeypatch.chdir(project)
    pipeline = load_pipeline("configs/pipeline/pipe.yaml")
    assert [(s.id, s.entry_point, s.enabled, s.needs) for s in pipeline.steps] == [
        ("train", "train", True, []), ("off", "train", False, ["train"]),
        ("inline", "compare", True, ["train"]), ("plot", "plot", True, ["inline"])]
    assert all(isinstance(s, OriginalStep) for s in pipeline.steps)


def test_step_files_and_inline_steps_become_their_commands(project, monkeypatch):
    monkeypatch.chdir(project)
    pipeline = load_pipeline("configs/pipeline/pipe.yaml")
    assert step_command(pipeline.step("train")) == [
        "mlproject", "train", "--run-name", "first", "--max-steps", "3", "--profile", "original"]
    assert step_command(pipeline.step("inline")) == ["mlproject", "compare", "--seeds", "1", "2", "--profile",
                                                     "original"]
    assert step_command(pipeline.step("plot")) == [
        "mlproject", "plot", "--results", "runs/a.jsonl", "runs/b.jsonl", "--kind", "compare", "--profile", "original"]


def test_a_retried_sweep_step_resumes_and_its_plan_stage_plans_only(project, monkeypatch):
    monkeypatch.chdir(project)
    step = load_pipeline("configs/pipeline/pipe.yaml").step("inline")
    assert step_command(step, resume=True)[-1] == "--resume"
    assert sweep_stage_command(step, "plan")[-3:] == ["--profile", "original", "--plan-only"]


def test_config_paths_are_relative_to_the_project_root_not_the_working_directory(project, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pipe = project / "configs/pipeline/pipe.yaml"
    data = yaml.safe_load(pipe.read_text())
    write(pipe, {**data, "project_root": str(project)})
    monkeypatch.chdir(elsewhere)
    pipeline = load_pipeline(pipe)
    assert pipeline.original.project_root == str(project)
    assert pipeline.step("train").argv[:2] == ["--run-name", "first"]


def test_project_root_defaults_to_and_is_relative_to_the_working_directory(project, monkeypatch):
    pipe = project / "configs/pipeline/pipe.yaml"
    data = yaml.safe_load(pipe.read_text())
    write(pipe, {k: v for k, v in data.items() if k != "project_root"})
    monkeypatch.chdir(project)
    assert load_pipeline(pipe).original.project_root == str(project)
    write(pipe, {**data, "project_root": "project"})
    monkeypatch.chdir(project.parent)
    assert load_pipeline(pipe).original.project_root == str(project)


def test_run_dir_defaults_to_research_runs_pipeline_name_under_the_project_root(project, monkeypatch):
    monkeypatch.chdir(project)
    pipeline = load_pipeline("configs/pipeline/pipe.yaml")
    assert pipeline.original.run_dir == str(project / "research_runs/pipeline/pipe")
    assert pipeline.settings.run_dir == pipeline.original.run_dir


def test_env_values_are_stringified_as_the_original_did(project, monkeypatch):
    monkeypatch.chdir(project)
    assert load_pipeline("configs/pipeline/pipe.yaml").settings.env == {
        "PYTHONUNBUFFERED": "1", "WORKERS": "2", "FLAG": "True"}


def test_a_step_without_config_or_script_and_an_unknown_key_are_one_line_errors(project, monkeypatch):
    monkeypatch.chdir(project)
    write(project / "bad.yaml", {"name": "x", "steps": [{"id": "a", "enabled": True}]})
    with pytest.raises(ConfigError, match="step a needs 'config' or 'script'"):
        load_pipeline("bad.yaml")
    write(project / "bad.yaml", {"name": "x", "stages": [], "steps": [{"id": "a", "script": "scripts/train.py"}]})
    with pytest.raises(ConfigError, match="unknown key 'stages' of an original pipeline"):
        load_pipeline("bad.yaml")


def test_a_step_files_unknown_flag_fails_the_pipeline_at_load_time(project, monkeypatch):
    monkeypatch.chdir(project)
    write(project / "configs/train/t.yaml", {"script": "scripts/train.py", "args": {"max-stepz": 3}})
    with pytest.raises(ConfigError, match=r"configs/train/t\.yaml: unknown key args\.max-stepz"):
        load_pipeline("configs/pipeline/pipe.yaml", cli.known_flags)


def test_a_step_file_given_as_a_pipeline_names_the_command_to_run(project, monkeypatch):
    monkeypatch.chdir(project)
    with pytest.raises(ConfigError, match=r"step config of the original scripts/train\.py, not a pipeline; "
                                          r"run it with `mlproject train --config"):
        load_pipeline("configs/train/t.yaml")


# ----------------------------------------------------------------------------- running one

FAKE_MLPROJECT = textwrap.dedent('''\
    import json, os, sys
    with open(os.environ["FAKE_MLPROJECT_LOG"], "a") as log:
        log.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(),
                              "env": {k: os.environ.get(k) for k in ("PYTHONUNBUFFERED", "WORKERS", "FLAG")}}) + "\\n")
    if "boom" in sys.argv:
        print("Traceback (most recent call last):\\nRuntimeError: boom")
        sys.exit(3)
''')


@pytest.fixture
def fake_mlproject(project, tmp_path, monkeypatch):
    """A fake `mlproject` first on PATH and a store of the test's own; returns its recorded calls."""
    import mlflow

    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "mlproject").write_text(f"#!{sys.executable}\n{FAKE_MLPROJECT}")
    (bin_dir / "mlproject").chmod(0o755)
    log = tmp_path / "calls.jsonl"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MLPROJECT_LOG", str(log))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.chdir(tmp_path)  # not the project: steps must run in its project_root all the same
    mlflow.set_tracking_uri(uri)
    yield lambda: [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    mlflow.set_tracking_uri(None)


def original_reports(project: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((project / "research_runs/pipeline/pipe").glob("execution_*.json"))]


def set_root(project: Path) -> Path:
    """The pipeline with an absolute project_root, so it can run from any directory."""
    pipe = project / "configs/pipeline/pipe.yaml"
    write(pipe, {**yaml.safe_load(pipe.read_text()), "project_root": str(project)})
    return pipe


def test_steps_run_in_the_project_root_with_the_pipelines_env(project, fake_mlproject):
    assert run_pipeline(PipelineOptions(str(set_root(project)))) == 0
    calls = fake_mlproject()
    assert [c["argv"][0] for c in calls] == ["train", "compare", "plot"]  # the disabled step did not run
    assert {c["cwd"] for c in calls} == {str(project)}
    assert calls[0]["env"] == {"PYTHONUNBUFFERED": "1", "WORKERS": "2", "FLAG": "True"}


def test_the_original_report_has_exactly_its_keys_beside_the_suites(project, fake_mlproject):
    run_pipeline(PipelineOptions(str(set_root(project))))
    (report,) = original_reports(project)
    assert list(report) == ORIGINAL_REPORT_KEYS
    assert report["run_name"] == "pipe" and report["dry_run"] is False
    assert report["pipeline_config"] == str(project / "configs/pipeline/pipe.yaml")
    assert report["project_root"] == str(project)
    assert [(r["step_id"], r["status"], r["returncode"]) for r in report["results"]] == [
        ("train", "ok", 0), ("off", "skipped", None), ("inline", "ok", 0), ("plot", "ok", 0)]
    assert all(list(r) == ORIGINAL_RESULT_KEYS for r in report["results"])
    assert report["results"][0]["command"][:3] == ["mlproject", "train", "--run-name"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", report["results"][0]["started_at"])
    (suite_report,) = (project / "research_runs/pipeline/pipe").glob("pipe-*/report.json")
    assert json.loads(suite_report.read_text())["status"] == "succeeded"


def test_the_report_file_is_named_by_its_utc_time(project, fake_mlproject):
    run_pipeline(PipelineOptions(str(set_root(project)), dry_run=True))
    (path,) = (project / "research_runs/pipeline/pipe").glob("execution_*.json")
    assert re.fullmatch(r"execution_\d{8}_\d{6}\.json", path.name)


def test_a_dry_run_runs_nothing_and_writes_the_original_report(project, fake_mlproject):
    assert run_pipeline(PipelineOptions(str(set_root(project)), dry_run=True)) == 0
    assert fake_mlproject() == []
    (report,) = original_reports(project)
    assert report["dry_run"] is True
    assert [(r["step_id"], r["status"], r["returncode"]) for r in report["results"]] == [
        ("train", "dry_run", 0), ("off", "skipped", None), ("inline", "dry_run", 0), ("plot", "dry_run", 0)]
    assert report["results"][2]["command"] == ["mlproject", "compare", "--seeds", "1", "2", "--profile", "original"]


def fail_inline(project: Path) -> None:
    pipe = project / "configs/pipeline/pipe.yaml"
    data = yaml.safe_load(pipe.read_text())
    data["steps"][2]["args"]["experiment-name"] = "boom"
    write(pipe, data)


def test_a_failed_step_stops_the_pipeline_where_the_original_stopped(project, fake_mlproject):
    fail_inline(project)
    assert run_pipeline(PipelineOptions(str(set_root(project)))) == 1
    assert [c["argv"][0] for c in fake_mlproject()] == ["train", "compare"]
    (report,) = original_reports(project)
    assert [(r["step_id"], r["status"], r["returncode"]) for r in report["results"]] == [
        ("train", "ok", 0), ("off", "skipped", None), ("inline", "failed", 3)]


def test_continue_on_error_runs_the_steps_after_a_failure(project, fake_mlproject):
    fail_inline(project)
    assert run_pipeline(PipelineOptions(str(set_root(project)), continue_on_error=True)) == 1
    assert [c["argv"][0] for c in fake_mlproject()] == ["train", "compare", "plot"]
    (report,) = original_reports(project)
    assert [r["status"] for r in report["results"]] == ["ok", "skipped", "failed", "ok"]


def test_selected_steps_run_alone_and_the_report_lists_only_them(project, fake_mlproject):
    assert run_pipeline(PipelineOptions(str(set_root(project)), step=["plot"])) == 0
    assert [c["argv"][0] for c in fake_mlproject()] == ["plot"]
    (report,) = original_reports(project)
    assert [(r["step_id"], r["status"]) for r in report["results"]] == [("plot", "ok")]


def test_a_config_that_is_not_yaml_is_left_to_the_commands_own_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    assert expand_cli_argv(["train", "--config", str(bad)], cli.known_flags) == ["train", "--config", str(bad)]
    assert cli.main(["train", "--config", str(bad)]) == 2
    assert "invalid YAML" in capsys.readouterr().err
