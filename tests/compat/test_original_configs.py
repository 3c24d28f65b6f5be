"""The original suite's six YAML files, in its format, run end to end.

The files below are the original's `configs/` as it has them (top-level `script` + `args` with
dashed flag names; a pipeline of `name`, `project_root`, `run_dir`, `env`, `steps`), written into
a project folder of the test. They run offline: the command line overrides the dataset with
`pydocs` and the sizes with tiny ones (flags after `--config` win). The pipeline runs its own
file as written; its step files are the same files with those overrides added to their `args`
(a pipeline has no command line of its steps).

Loading an original file implies `--profile original`, and the files use flags of the original
scripts (`--base-lr`, `--amp`, `--plot-name`, `--summary-csv`) that come with that profile.
A case whose flags this CLI does not have yet is skipped, naming them (`missing_flags`).
"""

from __future__ import annotations

import csv
import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from compat_helpers import SHRINK, Ran, Shell
from helpers import REPO, VENV_BIN
from mlproject import cli

pytestmark = pytest.mark.e2e

ORIGINAL_CONFIGS = {
    "configs/train/gpt3_research_small.yaml": """\
        name: gpt3_research_small
        script: scripts/train.py
        args:
          dataset: small
          model-version: gpt3
          model-preset: small
          block-size: 256
          batch-size: 32
          num-workers: 2
          epochs: 3
          max-steps: 2000
          base-lr: 0.0003
          val-checking: true
          norm-type: rmsnorm
          mlp-type: swiglu
          pos-encoding: rope
          attention-impl: sdpa
          gradient-checkpointing: true
          output-dir: checkpoints
          run-name: gpt3_research_small
          amp: false
          device: cpu
        """,
    "configs/compare/gpt2_vs_gpt3_small_fair.yaml": """\
        name: gpt2_vs_gpt3_small_fair
        script: scripts/compare_models.py
        args:
          dataset: small
          models: [gpt2, gpt3]
          seeds: [42, 43, 44]
          n-layer: 8
          n-head: 8
          d-model: 512
          block-size: 256
          batch-size: 32
          epochs: 3
          max-steps: 2000
          val-checking: true
          output-dir: research_runs/compare
          experiment-name: gpt2_vs_gpt3_small_fair
          device: cpu
          amp: false
        """,
    "configs/ablation/norm_ablation_gpt3_small.yaml": """\
        name: norm_ablation_gpt3_small
        script: scripts/run_ablations.py
        args:
          model-version: gpt3
          dataset: small
          ablation-axis: norm_type
          ablation-values: [layernorm, rmsnorm]
          seeds: [42, 43]
          n-layer: 8
          n-head: 8
          d-model: 512
          block-size: 256
          batch-size: 32
          epochs: 3
          max-steps: 2000
          val-checking: true
          output-dir: research_runs/ablations
          experiment-name: norm_ablation_gpt3_small
          device: cpu
          amp: false
        """,
    "configs/plot/compare_plot.yaml": """\
        name: compare_plot
        script: scripts/plot_results.py
        args:
          results:
            - research_runs/compare/gpt2_vs_gpt3_small_fair/results.jsonl
          kind: compare
          metric: val_loss_best
          output-dir: research_runs/plots
          plot-name: compare_gpt2_vs_gpt3_small_fair.png
          summary-csv: research_runs/plots/summary_compare_small.csv
        """,
    "configs/plot/ablation_plot.yaml": """\
        name: ablation_plot
        script: scripts/plot_results.py
        args:
          results:
            - research_runs/ablations/norm_ablation_gpt3_small/results.jsonl
          kind: ablation
          metric: val_loss_best
          output-dir: research_runs/plots
          plot-name: ablation_norm_gpt3_small.png
          summary-csv: research_runs/plots/summary_ablation_norm_small.csv
        """,
    "configs/pipeline/research_small_repro.yaml": """\
        name: research_small_repro
        project_root: .
        run_dir: research_runs/pipeline_research_small_repro
        env:
          PYTHONUNBUFFERED: "1"

        steps:
          - id: compare
            enabled: true
            config: configs/compare/gpt2_vs_gpt3_small_fair.yaml

          - id: ablation
            enabled: true
            config: configs/ablation/norm_ablation_gpt3_small.yaml

          - id: plot_compare
            enabled: true
            config: configs/plot/compare_plot.yaml

          - id: plot_ablation
            enabled: true
            config: configs/plot/ablation_plot.yaml
        """,
}
TRAIN, COMPARE, ABLATION, PLOT_COMPARE, PLOT_ABLATION, PIPELINE = ORIGINAL_CONFIGS
# The tiny sizes as a step file's args (the pipeline's steps have no command line).
TINY_ARGS = {"dataset": "pydocs", "n-layer": 2, "n-head": 2, "d-model": 64, "block-size": 32, "batch-size": 4,
             "max-steps": 4, "eval-batches": 2, "vocab-size": 512, "max-train-docs": 200, "max-val-docs": 20,
             "log-model": "false"}
# Flags of the original scripts that the files use, per subcommand, and a value of each: they come
# with the original profile (`--profile`, with the original's defaults).
ORIGINAL_FLAGS = {"train": [("--profile", "original"), ("--base-lr", "0.0003"), ("--amp",)],
                  "compare": [("--profile", "original"), ("--amp",)],
                  "ablate": [("--profile", "original"), ("--amp",)],
                  "plot": [("--profile", "original"), ("--plot-name", "p.png"), ("--summary-csv", "s.csv")]}


def missing_flags(*commands: str) -> list[str]:
    """The flags of ORIGINAL_FLAGS that `mlproject <command>` does not parse."""
    parser, missing = cli.build_parser(), []
    for command in commands:
        for flag, *value in ORIGINAL_FLAGS[command]:
            try:
                _, extra = parser.parse_known_args([command, flag, *value])
            except SystemExit:  # it knows the flag, and refused the value
                continue
            if flag in extra:
                missing.append(f"{command} {flag}")
    return missing


def needs_original_flags(*commands: str) -> pytest.MarkDecorator:
    """Skip until the CLI has the original scripts' flags these files use (`--profile original`,
    `--base-lr`, `--amp`, `--plot-name`, `--summary-csv`), naming the ones it lacks."""
    missing = missing_flags(*commands)
    return pytest.mark.skipif(bool(missing), reason=f"needs the original scripts' flags: {', '.join(missing)}")


@pytest.fixture(scope="module")
def osh(sh: Shell, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    """A project folder holding the six files, its own store, the session's token cache."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("original-configs")
    for rel, text in ORIGINAL_CONFIGS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    uri = f"sqlite:///{root}/mlflow.db"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        MlflowClient(tracking_uri=uri).search_experiments()
    finally:
        os.chdir(cwd)
    yield Shell(root, {**sh.env, "MLFLOW_TRACKING_URI": uri,
                       "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def compared(osh: Shell) -> Ran:
    return osh.run(f"mlproject compare --config {COMPARE} --dataset pydocs {SHRINK} --seeds 42 43 --log-model false")


@pytest.fixture(scope="module")
def ablated(osh: Shell) -> Ran:
    return osh.run(f"mlproject ablate --config {ABLATION} --dataset pydocs {SHRINK} --log-model false")


@needs_original_flags("train")
def test_train_config_trains_with_its_settings_and_the_original_profile(osh: Shell, tracking):
    from mlflow import MlflowClient

    ran = osh.run(f"mlproject train --config {TRAIN} --dataset pydocs {SHRINK}")
    run_id = json.loads(ran.line("MLPROJECT_RESULT"))["run_id"]
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.norm_type"] == "rmsnorm" and run.data.params["model.mlp_type"] == "swiglu"
    assert run.data.params["model.pos_encoding"] == "rope" and run.data.params["model.model_version"] == "gpt3"
    assert run.data.params["data.dataset"] == "pydocs"  # the command line overrode the file
    assert float(run.data.params["train.lr"]) == pytest.approx(3e-4)  # base-lr: 0.0003
    assert "original" in run.data.tags.values()  # the profile is recorded
    assert (osh.workdir / "checkpoints" / "gpt3_research_small.last.pt").is_file()


@needs_original_flags("compare")
def test_compare_config_runs_its_models_and_writes_its_results(osh: Shell, compared):
    rows = read_jsonl(osh.workdir / "research_runs/compare/gpt2_vs_gpt3_small_fair/results.jsonl")
    assert sorted((r["group"], r["seed"]) for r in rows) == [("gpt2", 42), ("gpt2", 43), ("gpt3", 42), ("gpt3", 43)]
    assert all(r["status"] == "FINISHED" for r in rows)


@needs_original_flags("ablate")
def test_ablation_config_runs_its_axis_and_writes_its_results(osh: Shell, ablated):
    rows = read_jsonl(osh.workdir / "research_runs/ablations/norm_ablation_gpt3_small/results.jsonl")
    assert sorted((r["group"], r["seed"]) for r in rows) == [("layernorm", 42), ("layernorm", 43),
                                                            ("rmsnorm", 42), ("rmsnorm", 43)]


@needs_original_flags("compare", "plot")
def test_compare_plot_config_writes_its_plot_name_and_summary_csv(osh: Shell, compared):
    osh.run(f"mlproject plot --config {PLOT_COMPARE}")
    assert (osh.workdir / "research_runs/plots/compare_gpt2_vs_gpt3_small_fair.png").stat().st_size > 0
    with (osh.workdir / "research_runs/plots/summary_compare_small.csv").open() as f:
        assert sorted(row["group"] for row in csv.DictReader(f)) == ["gpt2", "gpt3"]


@needs_original_flags("ablate", "plot")
def test_ablation_plot_config_writes_its_plot_name_and_summary_csv(osh: Shell, ablated):
    osh.run(f"mlproject plot --config {PLOT_ABLATION}")
    assert (osh.workdir / "research_runs/plots/ablation_norm_gpt3_small.png").stat().st_size > 0
    with (osh.workdir / "research_runs/plots/summary_ablation_norm_small.csv").open() as f:
        assert sorted(row["group"] for row in csv.DictReader(f)) == ["layernorm", "rmsnorm"]


@needs_original_flags("compare", "ablate", "plot")
def test_pipeline_config_runs_its_four_steps_and_writes_the_original_report(osh: Shell, tmp_path: Path):
    project = tmp_path / "project"
    for rel in (COMPARE, ABLATION, PLOT_COMPARE, PLOT_ABLATION, PIPELINE):
        data = yaml.safe_load(textwrap.dedent(ORIGINAL_CONFIGS[rel]))
        if rel in (COMPARE, ABLATION):  # the step files with the tiny sizes added to their args
            data["args"].update(TINY_ARGS, **({"seeds": [42, 43]} if rel == COMPARE else {}))
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(yaml.safe_dump(data, sort_keys=False))
    ran = osh.run(f"mlproject pipeline --config {PIPELINE}", cwd=project)
    assert json.loads(ran.line("MLPROJECT_RESULT"))["status"] == "succeeded"
    (path,) = (project / "research_runs/pipeline_research_small_repro").glob("execution_*.json")
    report = json.loads(path.read_text())
    assert list(report) == ["pipeline_config", "project_root", "run_dir", "run_name", "dry_run", "results",
                            "finished_at"]
    assert [(r["step_id"], r["status"], r["returncode"]) for r in report["results"]] == [
        ("compare", "ok", 0), ("ablation", "ok", 0), ("plot_compare", "ok", 0), ("plot_ablation", "ok", 0)]
    assert (project / "research_runs/plots/compare_gpt2_vs_gpt3_small_fair.png").stat().st_size > 0
    assert (project / "research_runs/plots/summary_ablation_norm_small.csv").is_file()


@needs_original_flags("compare", "ablate", "plot")
def test_pipeline_config_dry_run_writes_the_original_report_and_runs_nothing(osh: Shell):
    ran = osh.run(f"mlproject pipeline --config {PIPELINE} --dry-run")
    assert "mlproject compare --dataset small --models gpt2 gpt3" in ran.output
    (path,) = (osh.workdir / "research_runs/pipeline_research_small_repro").glob("execution_*.json")
    report = json.loads(path.read_text())
    assert report["dry_run"] is True and [r["status"] for r in report["results"]] == ["dry_run"] * 4


def test_an_original_file_with_a_misspelt_flag_is_one_line_before_any_run(osh: Shell, tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent(ORIGINAL_CONFIGS[COMPARE]).replace("n-layer:", "n-layers:"))
    ran = osh.run(f"mlproject compare --config {bad} --dataset pydocs", check=False)
    assert ran.returncode == 2
    assert ran.output.strip().splitlines() == [
        f"mlproject: error: {bad}: unknown key args.n-layers: `mlproject compare` has no flag --n-layers "
        "(did you mean --n-layer?); see `mlproject compare --help`"]


def test_mlflow_run_of_the_pipeline_entry_point_takes_an_original_pipeline(osh: Shell, tmp_path: Path):
    # Under `mlflow run` the working directory is this project, so the file names its root.
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({
        "name": "via_mlflow_run", "project_root": str(tmp_path), "env": {"PYTHONUNBUFFERED": 1},
        "steps": [{"id": "train", "script": "scripts/train.py", "args": {"dataset": "pydocs", "max-steps": 2}}]}))
    ran = osh.run(f"mlflow run {REPO} -e pipeline --env-manager local -P config={pipeline} -P dry_run=true")
    assert "mlproject train --dataset pydocs --max-steps 2 --profile original" in ran.output
    (path,) = (tmp_path / "research_runs/pipeline/via_mlflow_run").glob("execution_*.json")
    report = json.loads(path.read_text())
    assert report["dry_run"] is True and report["project_root"] == str(tmp_path)
    assert report["results"][0]["command"] == ["mlproject", "train", "--dataset", "pydocs", "--max-steps", "2",
                                               "--profile", "original"]
