"""Every command of the original suite's README runs here as written.

Each test holds one command as the original README has it, with only the script name turned
into the subcommand (`python scripts/train.py` -> `mlproject train`) and the hub dataset into the
offline `pydocs`; sizes are shrunk by flags appended after it (conftest.SHRINK). The test then
checks that the outputs are where the original says they are.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import yaml

from compat_helpers import DATA_SHRINK, Shell
from helpers import REPO

# End-to-end (make test-all): the original README's commands, each run as a user runs it.
pytestmark = pytest.mark.e2e

DATASET_KEYS = ("small", "large", "wikitext2", "tinystories", "openwebtext", "c4_en", "pile", "redpajama",
                "local_jsonl")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- installation

def test_pip_install_requirements_installs_the_package_with_the_torch_pin(sh: Shell):
    # The original line, `pip install -r requirements.txt`, resolved without installing or downloading.
    ran = sh.run("pip install -r requirements.txt --dry-run --no-index --no-build-isolation", cwd=REPO)
    assert "Would install mlproject" in ran.output
    lines = (REPO / "requirements.txt").read_text().split()
    assert "-c" in lines and "constraints.txt" in lines  # torch==2.13.0: never an unpinned CUDA build
    assert "torch==" in (REPO / "constraints.txt").read_text()


# ----------------------------------------------------------------------------- datasets

def test_list_datasets(sh: Shell):
    ran = sh.run("mlproject datasets")
    for key in DATASET_KEYS:
        assert key in ran.output


def test_build_dataloaders_previews_batches(sh: Shell):
    ran = sh.run(f"mlproject dataloaders --dataset pydocs --preview-batches 2 {DATA_SHRINK} --block-size 32")
    assert "batch" in ran.output.lower()


# ----------------------------------------------------------------------------- 1. train

def test_train_writes_the_original_checkpoint_paths_and_prints_the_tokenizer(sh: Shell, trained, tracking):
    from mlflow import MlflowClient

    for kind in ("last", "best"):
        assert (sh.workdir / "checkpoints" / f"gpt3_research_small.{kind}.pt").is_file()
    tokenizer = sh.workdir / trained.line("tokenizer:").split()[0]
    assert tokenizer.is_file()
    run_id = json.loads(trained.line("MLPROJECT_RESULT"))["run_id"]
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "gpt3_research_small"
    params = run.data.params
    # --model-preset is --preset; the appended sizes override it; the bare --val-checking and
    # then `--val-checking 2` set the evaluation interval.
    assert params["model.preset"] == "small" and params["model.n_layer"] == "2"
    assert params["train.eval_interval"] == "2"
    assert params["model.norm_type"] == "rmsnorm" and params["model.gradient_checkpointing"] == "True"
    assert int(params["model.attention_window"]) < int(params["model.block_size"])  # the band binds


# ----------------------------------------------------------------------------- 2. compare

def test_compare_writes_results_jsonl_and_csv_under_research_runs(sh: Shell, compared, tracking):
    from mlflow import MlflowClient

    folder = sh.workdir / "research_runs" / "compare" / "gpt2_vs_gpt3_small_fair"
    rows = read_jsonl(folder / "results.jsonl")
    assert sorted((r["group"], r["seed"]) for r in rows) == [("gpt2", 42), ("gpt2", 43), ("gpt3", 42), ("gpt3", 43)]
    assert all(r["status"] == "FINISHED" for r in rows)
    with (folder / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4
    # The copy matches the parent run's results artifact (the source of truth).
    parent = json.loads(compared.line("MLPROJECT_RESULT"))["run_id"]
    assert MlflowClient().get_run(parent).data.tags["mlproject.sweep_kind"] == "compare"
    patterns = {MlflowClient().get_run(r["run_id"]).data.params["model.attention_pattern"] for r in rows}
    assert patterns == {"dense", "alternating"}
    gpt2 = {r["seed"]: r["val_loss_best"] for r in rows if r["group"] == "gpt2"}
    gpt3 = {r["seed"]: r["val_loss_best"] for r in rows if r["group"] == "gpt3"}
    assert all(gpt2[s] != gpt3[s] for s in gpt2)  # two different models, not one model twice
    assert not list((sh.workdir / "checkpoints").glob("gpt2-s42.*"))  # children keep theirs in MLflow only


# ----------------------------------------------------------------------------- 3. ablations

def test_ablation_writes_results_jsonl_and_csv_under_research_runs(sh: Shell, ablated):
    folder = sh.workdir / "research_runs" / "ablations" / "norm_ablation_gpt3_small"
    rows = read_jsonl(folder / "results.jsonl")
    assert sorted((r["group"], r["seed"]) for r in rows) == [("layernorm", 42), ("layernorm", 43),
                                                            ("rmsnorm", 42), ("rmsnorm", 43)]
    assert (folder / "results.csv").is_file()


# ----------------------------------------------------------------------------- 4. plot

def test_plot_compare_from_the_results_file(sh: Shell, compared):
    sh.run("""mlproject plot \\
  --results research_runs/compare/gpt2_vs_gpt3_small_fair/results.jsonl \\
  --kind compare \\
  --metric val_loss_best \\
  --output-dir research_runs/plots""")
    assert (sh.workdir / "research_runs" / "plots" / "compare_val_loss_best.png").stat().st_size > 0


def test_plot_ablation_from_the_results_file(sh: Shell, ablated):
    sh.run("""mlproject plot \\
  --results research_runs/ablations/norm_ablation_gpt3_small/results.jsonl \\
  --kind ablation \\
  --metric val_loss_best \\
  --output-dir research_runs/plots""")
    assert (sh.workdir / "research_runs" / "plots" / "ablation_val_loss_best.png").stat().st_size > 0


# ----------------------------------------------------------------------------- 5. generate

def test_generate_from_the_local_checkpoint_with_topk(sh: Shell, trained):
    # The original's `--tokenizer-path owt10k_tokenizer.json` is the tokenizer file train printed.
    tokenizer = trained.line("tokenizer:").split()[0]
    ran = sh.run(f"""mlproject generate \\
  --checkpoint checkpoints/gpt3_research_small.last.pt \\
  --tokenizer-path {tokenizer} \\
  --use-ckpt-config \\
  --prompt "What's your name?" \\
  --strategy topk \\
  --top-k 50 \\
  --max-new-tokens 64""")
    assert "What's your name?" in ran.output


def test_generate_from_the_runs_uri_that_train_prints(sh: Shell, trained):
    last = next(part.split("=", 1)[1] for part in trained.line("checkpoints:").split(", ") if part.startswith("last="))
    assert last.startswith("runs:/") and last.endswith("/checkpoints/last.pt")
    ran = sh.run(f'mlproject generate --checkpoint {last} --prompt "The module" --strategy greedy '
                 "--max-new-tokens 8", extra_env={"MLPROJECT_PROFILE": "default"})  # a command of this suite
    assert "The module" in ran.output


def test_generate_strategy_that_contradicts_a_flag_is_a_one_line_error(sh: Shell, trained):
    ran = sh.run("mlproject generate --checkpoint checkpoints/gpt3_research_small.last.pt "
                 f"--tokenizer-path {trained.line('tokenizer:').split()[0]} --strategy greedy --top-k 50",
                 check=False)
    assert ran.returncode == 2
    assert ran.output.strip().splitlines() == [
        "mlproject: error: generate: top_k=50 contradicts strategy='greedy'; drop it or use strategy=topk"]


def test_use_ckpt_config_refuses_a_size_that_contradicts_the_checkpoint(sh: Shell, trained):
    ran = sh.run("mlproject generate --checkpoint checkpoints/gpt3_research_small.last.pt --use-ckpt-config "
                 f"--tokenizer-path {trained.line('tokenizer:').split()[0]} --n-layer 8", check=False)
    assert ran.returncode == 2
    (line,) = ran.output.strip().splitlines()
    assert "n_layer=8 does not match the checkpoint's n_layer=2" in line


# ----------------------------------------------------------------------------- pipeline

def test_pipeline_dry_run(sh: Shell):
    ran = sh.run("mlproject pipeline --config configs/pipeline/research_small_repro.yaml --dry-run", cwd=REPO)
    assert [line for line in ran.output.splitlines() if line.startswith("mlflow run")][0].startswith(
        "mlflow run . -e compare")


def test_pipeline_specific_steps(sh: Shell):
    ran = sh.run("""mlproject pipeline \\
  --config configs/pipeline/research_small_repro.yaml \\
  --step compare \\
  --step plot_compare --dry-run""", cwd=REPO)
    commands = [line for line in ran.output.splitlines() if line.startswith("mlflow run")]
    assert [c.split(" -e ")[1].split()[0] for c in commands] == ["compare", "plot"]
    assert "# ablation: skipped (not selected)" in ran.output


def test_pipeline_runs_outside_the_repository_root(sh: Shell, tmp_path: Path):
    # A pipeline file outside the checkout whose steps name the repository's configs by their
    # relative paths, started from a directory that is not the repository root.
    pipeline = tmp_path / "research_small_repro.yaml"
    tiny = {"n_layer": 2, "n_head": 2, "d_model": 64, "block_size": 32, "batch_size": 4, "max_steps": 3,
            "eval_batches": 2, "vocab_size": 512, "max_train_docs": 200, "max_val_docs": 20, "seeds": 42,
            "parallel": 1, "log_model": "false", "output_dir": str(tmp_path / "runs")}
    pipeline.write_text(yaml.safe_dump({
        "pipeline": {"name": "outside_root", "experiment_name": "outside_root",
                     "run_dir": str(tmp_path / "pipeline_runs"),
                     # `mlflow run` works in the project: the original's local copies go here instead.
                     "env": {"MLPROJECT_LOCAL_DIR": str(tmp_path)}},
        "steps": [
            {"id": "compare", "entry_point": "compare",
             "parameters": {"config": "configs/compare/gpt2_vs_gpt3_small_fair_offline.yaml", **tiny}},
            {"id": "plot_compare", "entry_point": "plot", "needs": ["compare"],
             "parameters": {"config": "configs/plot/compare_plot_offline.yaml",
                            "parent_run_id": "{{ steps.compare.run_id }}",
                            "output_dir": str(tmp_path / "plots")}},
        ]}, sort_keys=False))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = sh.run(f"mlproject pipeline --config {pipeline}", cwd=elsewhere)
    assert json.loads(ran.line("MLPROJECT_RESULT"))["status"] == "succeeded"
    assert list((tmp_path / "plots").glob("compare_*.png"))
    assert (tmp_path / "research_runs" / "compare" / "outside_root" / "results.jsonl").is_file()


def test_pipeline_without_a_project_says_what_to_do(sh: Shell, tmp_path: Path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"pipeline": {"name": "nowhere", "project_dir": str(tmp_path)},
                                        "steps": [{"id": "train", "entry_point": "train"}]}))
    ran = sh.run(f"mlproject pipeline --config {pipeline} --dry-run", cwd=tmp_path, check=False)
    assert ran.returncode == 2
    (line,) = ran.output.strip().splitlines()
    assert f"project_dir={str(tmp_path)!r} has no MLproject file" in line
    assert "set pipeline.project_dir to the repository" in line


# ----------------------------------------------------------------------------- Airflow

def _dag_module():
    import importlib.util
    import sys

    path = REPO / "airflow" / "dags" / "gpt_research_pipeline.py"
    spec = importlib.util.spec_from_file_location("gpt_research_pipeline_compat", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_dag_honours_gpt_pipeline_config_and_warns_about_gpt_python_bin(caplog, capsys):
    dagmod = _dag_module()
    config = str(REPO / "configs" / "pipeline" / "research_small_repro_offline.yaml")
    with caplog.at_level(logging.WARNING):
        settings = dagmod.DagSettings.from_env({"GPT_PIPELINE_CONFIG": config, "GPT_PYTHON_BIN": "python"})
    assert settings.pipeline_config == config
    # Airflow routes logging through its own handlers to stdout; either way the warning is shown.
    shown = capsys.readouterr().out + caplog.text
    assert "GPT_PYTHON_BIN=python is ignored" in shown and "step image" in shown
    dag = dagmod.build_dag(settings)
    assert dag.params["pipeline_config"] == config
    # The project's own variable wins over the original's.
    other = str(REPO / "configs" / "pipeline" / "research_small_repro.yaml")
    both = dagmod.DagSettings.from_env({"GPT_PIPELINE_CONFIG": config, "MLPROJECT_PIPELINE_CONFIG": other})
    assert both.pipeline_config == other
