"""`python scripts/*.py ...`: the original README's commands letter for letter, in the original
profile (the shims), with its defaults, its tag and its files.

As in test_original_readme.py, sizes are shrunk by flags appended after the command and the hub
dataset is replaced by the offline `pydocs` the same way; the experiment and run names get a
suffix so these runs never overwrite the ones the `mlproject ...` tests read.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from compat_helpers import SHRINK, Ran, Shell
from helpers import REPO

pytestmark = pytest.mark.e2e

OFFLINE = "--dataset pydocs --log-model false"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def scripts(sh: Shell) -> Shell:
    """The working directory of the original repository: its `scripts/` are the shims."""
    link = sh.workdir / "scripts"
    if not link.exists():
        link.symlink_to(REPO / "scripts", target_is_directory=True)
    return sh


@pytest.fixture(scope="session")
def compared_original(scripts: Shell) -> Ran:
    return scripts.run(f"""python scripts/compare_models.py \\
  --dataset small \\
  --models gpt2 gpt3 \\
  --seeds 42 43 44 \\
  --n-layer 8 --n-head 8 --d-model 512 \\
  --epochs 3 --max-steps 2000 \\
  --val-checking \\
  --experiment-name gpt2_vs_gpt3_small_fair \\
  {SHRINK} {OFFLINE} --seeds 42 43 --experiment-name shim_gpt2_vs_gpt3_small_fair""")


@pytest.fixture(scope="session")
def trained_original(scripts: Shell) -> Ran:
    return scripts.run(f"""python scripts/train.py \\
  --dataset small \\
  --model-version gpt3 \\
  --model-preset small \\
  --block-size 256 \\
  --batch-size 32 \\
  --epochs 3 \\
  --max-steps 2000 \\
  --norm-type rmsnorm \\
  --mlp-type swiglu \\
  --pos-encoding rope \\
  --attention-impl sdpa \\
  --gradient-checkpointing \\
  --val-checking \\
  --run-name gpt3_research_small \\
  {SHRINK} {OFFLINE} --run-name shim_gpt3_research_small""")


def test_python_scripts_compare_models_runs_in_the_original_profile(scripts, compared_original, tracking):
    from mlflow import MlflowClient

    client = MlflowClient()
    parent = client.get_run(json.loads(compared_original.line("MLPROJECT_RESULT"))["run_id"])
    assert parent.data.tags["mlproject.profile"] == "original"
    rows = read_jsonl(scripts.workdir / "research_runs" / "compare" / "shim_gpt2_vs_gpt3_small_fair"
                      / "results.jsonl")
    assert sorted(r["run_name"] for r in rows) == ["gpt2_seed42", "gpt2_seed43", "gpt3_seed42", "gpt3_seed43"]
    for row in rows:  # the original's columns beside this suite's
        assert row["params_trainable"] == row["params_total"] > 0 and row["train_ppl_last"] > 1
        assert row["best_ckpt"].startswith("runs:/") and row["ablation_axis"] is None
        assert row["global_steps"] == 4  # --max-steps of the appended sizes
        child = client.get_run(row["run_id"])
        assert child.data.tags["mlproject.profile"] == "original"
        params = child.data.params
        assert (params["model.dropout"], params["model.attention_impl"], params["train.learning_rate"],
                params["train.precision"]) == ("0.1", "manual", "0.0003", "fp32")
        # its compare trained each version with that version's recipe
        assert params["train.beta2"] == {"gpt2": "0.999", "gpt3": "0.95"}[row["model_version"]]


def test_python_scripts_plot_results_writes_its_summary_csv(scripts, compared_original):
    scripts.run("""python scripts/plot_results.py \\
  --results research_runs/compare/shim_gpt2_vs_gpt3_small_fair/results.jsonl \\
  --kind compare \\
  --metric val_loss_best \\
  --output-dir research_runs/plots""")
    plots = scripts.workdir / "research_runs" / "plots"
    assert (plots / "compare_val_loss_best.png").stat().st_size > 0
    with (plots / "summary_compare_val_loss_best.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert sorted(r["model_version"] for r in summary) == ["gpt2", "gpt3"]
    assert list(summary[0]) == ["model_version", "group", "n", "mean", "std", "min", "max"] and summary[0]["n"] == "2"


def test_python_scripts_train_writes_the_originals_files(scripts, trained_original):
    out = scripts.workdir / "checkpoints"  # its --output-dir default
    config = json.loads((out / "shim_gpt3_research_small_config.json").read_text())
    assert (config["model_version"], config["norm_type"], config["base_lr"]) == ("gpt3", "rmsnorm", 3e-4)
    history = torch.load(out / "shim_gpt3_research_small_history.pt", weights_only=True)
    assert history["global_steps"] == 4 and history["val_loss"]
    assert (out / "shim_gpt3_research_small.pt").is_file() and (out / "shim_gpt3_research_small.last.pt").is_file()


def test_python_scripts_generate_reads_the_checkpoint_train_wrote(scripts, trained_original):
    tokenizer = trained_original.line("tokenizer:").split()[0]
    ran = scripts.run(f"""python scripts/generate.py \\
  --checkpoint checkpoints/shim_gpt3_research_small.last.pt \\
  --tokenizer-path {tokenizer} \\
  --use-ckpt-config \\
  --prompt "What's your name?" \\
  --strategy topk \\
  --top-k 50 \\
  --max-new-tokens 64""")
    assert "What's your name?" in ran.output


def test_python_scripts_run_ablations_runs_with_resid_dropout_as_its_axis(scripts, tracking):
    ran = scripts.run(f"""python scripts/run_ablations.py \\
  --model-version gpt3 \\
  --dataset small \\
  --ablation-axis resid_dropout \\
  --ablation-values 0.0 0.2 \\
  --seeds 42 \\
  --epochs 3 --max-steps 2000 \\
  --experiment-name shim_resid_dropout_ablation \\
  {SHRINK} {OFFLINE}""")
    rows = read_jsonl(scripts.workdir / "research_runs" / "ablations" / "shim_resid_dropout_ablation"
                      / "results.jsonl")
    assert sorted((r["ablation_axis"], r["ablation_value"]) for r in rows) == [("resid_dropout", "0.0"),
                                                                              ("resid_dropout", "0.2")]
    assert json.loads(ran.line("MLPROJECT_RESULT"))["status"] == "FINISHED"
