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
    "generate_bf16_vs_fp32_b1", "generate_bf16_vs_fp32_b8",
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
