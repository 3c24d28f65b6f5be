"""The benchmark suite stays runnable: a quick run reports every figure (no timing asserted)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from helpers import REPO


FIGURES = {
    "train_gpt2_vs_hf_nano", "train_gpt3_dense_vs_gpt2_nano", "train_gpt3_banded_vs_gpt2_nano", "mfu_nano",
    "train_gpt2_vs_hf_small", "train_gpt3_dense_vs_gpt2_small", "train_gpt3_banded_vs_gpt2_small", "mfu_small",
    "generate_vs_hf_b1", "generate_vs_hf_b8", "tracking_overhead", "data_loading_share",
    "train_bf16_vs_fp32_nano", "mfu_bf16_nano", "train_bf16_vs_fp32_small", "mfu_bf16_small",
    "generate_fp32_vs_bf16_b1", "generate_fp32_vs_bf16_b8",
}


@pytest.mark.e2e
def test_quick_json_run_reports_every_figure_with_its_target(tmp_path):
    env = {**os.environ, "MLPROJECT_CACHE_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/unused.db"}
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--json", "--threads", "1"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    figures = {f["key"]: f for f in report["figures"]}
    assert set(figures) == FIGURES
    for f in figures.values():
        assert f["ours"] > 0 and f["peer"] > 0 and math.isclose(f["ratio"], f["ours"] / f["peer"])
        assert f["target"].startswith((">=", "<")) and isinstance(f["passed"], bool)
    assert report["machine"]["cores"] >= 1 and report["settings"]["quick"] is True


@pytest.mark.e2e
def test_command_latency_reports_every_command_of_one_round(tmp_path):
    """`python -m benchmarks.command_latency` runs the commands as a user does and reports each."""
    env = {**os.environ, "MLPROJECT_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "benchmarks.command_latency", "--rounds", "1", "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]  # 1: a target missed
    report = json.loads(done.stdout)
    figures = report["figures"]
    assert len(report["met"]) == 2  # generate and train have targets
    assert figures["train_sec"] > 0 and figures["train_wall_sec"] > figures["train_sec"]
    assert 0 < figures["summary_first_line_sec"] < figures["summary_sec"]
    assert all(figures[k] > 0 for k in ("import_sec", "help_sec", "generate_sec", "train_to_first_step_sec",
                                        "invocations_sec", "serve_start_sec"))
    assert figures["invocations_sec"] < figures["generate_sec"]  # no process start, no model load per request
    assert report["met"][next(n for n in report["met"] if n.startswith("generate"))] == (figures["generate_sec"] <= 4)


def test_the_table_ends_with_how_many_figures_pass(monkeypatch, capsys):
    import benchmarks.__main__ as suite
    from benchmarks.harness import Figure

    figures = [Figure("fast", "a rate", "tok/s", 2.0, 1.0, 1.5), Figure("share", "a share", "ms", 3.0, 100.0, 0.01,
                                                                          at_least=False)]
    monkeypatch.setattr(suite, "run", lambda groups, settings: figures)
    assert suite.main(["--only", "trainer"]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == "1 of 2 figures pass; below target: share"


@pytest.mark.e2e
def test_bf16_quality_smoke_run_reports_both_precisions_per_seed(tmp_path):
    """`python -m benchmarks.bf16_quality` trains both precisions per seed with the real trainer."""
    out = tmp_path / "quality.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.bf16_quality", "--steps", "4", "--seeds", "1", "2",
                           "--block-size", "32", "--batch-size", "2", "--eval-batches", "2", "--threads", "1",
                           "--cache-dir", str(tmp_path / "cache"), "--json", str(out)],
                          cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["seeds"] == [1, 2] and report["block_size"] == 32
    for precision in ("fp32", "bf16"):
        losses = report["val_loss"][precision]
        assert len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in losses)
        assert math.isclose(report["mean"][precision], sum(losses) / 2)
    assert isinstance(report["bf16_within_one_fp32_std"], bool)


@pytest.mark.e2e
def test_corpus_prep_smoke_run_reports_throughput_memory_and_hash_cost(tmp_path):
    """`python -m benchmarks.corpus_prep` at toy sizes: every section of its report is there and sane."""
    out = tmp_path / "corpus.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.corpus_prep", "--mb", "0.3", "--memory-mb", "0.3",
                           "--hash-mb", "2", "--repeats", "1", "--workers", "1", "--vocab-size", "400",
                           "--json", str(out)],
                          cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", "MLPROJECT_CACHE_DIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    speed = report["throughput"]
    assert speed["corpus_mb"] > 0.2 and speed["workers"] == 1 and speed["rounds"] == 1
    assert speed["ours_mb_per_s"] > 0 and speed["tiktoken_mb_per_s"] > 0
    assert math.isclose(speed["ratio"], speed["ours_mb_per_s"] / speed["tiktoken_mb_per_s"])
    assert speed["same_ids_share_on_200_docs"] == 1.0  # tiktoken's engine running our BPE gives our ids
    memory = report["memory"]["0.3"]
    assert memory["tokens"] > 0 and memory["peak_rss_mb"] >= memory["rss_before_mb"] > 0
    verify = report["verify"]
    assert verify["megabytes"] == 2 and len(verify["seconds"]) == 3 and verify["gb_per_s"] > 0


@pytest.mark.e2e
def test_sweep_orchestration_config_plans_its_four_children(tmp_path):
    """The compare that `benchmarks.sweep_orchestration` times (by hand: it needs Docker and Airflow)
    still loads, in the current layout, and plans 2 models x 2 seeds: its DAG's first task."""
    from benchmarks.sweep_orchestration import compare_config

    config = compare_config(tmp_path, "orchestration-smoke", steps=4)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLPROJECT_CACHE_DIR": str(tmp_path / "cache"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    done = subprocess.run([sys.executable, "-m", "mlproject", "compare", "--config", str(config), "--plan-only"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "deprecated" not in done.stdout + done.stderr
    result = json.loads(next(line for line in done.stdout.splitlines()
                             if line.startswith("MLPROJECT_RESULT "))[len("MLPROJECT_RESULT "):])
    assert result["stage"] == "plan" and len(result["children"]) == 4 and result["todo"] == result["children"]
