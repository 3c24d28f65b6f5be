"""benchmarks/gpu_check.sh stays runnable where no GPU is: its --dry-run runs every check on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO


@pytest.mark.e2e
@pytest.mark.serial  # it measures MFU: a busy neighbour would skew the probe against the run
def test_gpu_check_dry_run_writes_every_figure(tmp_path):
    out = tmp_path / "gpu_check.json"
    # The script runs with the test's interpreter (PYTHON) and installs nothing in a dry run.
    env = {**os.environ, "MLPROJECT_CACHE_DIR": str(tmp_path / "cache"), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["device"] == "cpu (dry run)"
    checks = report["checks"]
    assert set(checks) == {"train", "generate", "compare", "sdpa"}
    assert not any("error" in c for c in checks.values()), checks
    train = checks["train"]
    assert train["precision"] == "bf16" and train["tokens_per_sec"] > 0 and 0 < train["mfu"] < 1
    for batch in ("b1", "b8"):
        assert checks["generate"][batch]["ours_tokens_per_sec"] > 0 and checks["generate"][batch]["hf_tokens_per_sec"] > 0
    assert checks["compare"]["returncode"] == 0
    assert checks["compare"]["children"] == checks["compare"]["children_finished"] == 4
    assert checks["sdpa"]["flash"] is True and any("flash" in op for op in checks["sdpa"]["ops"])


def test_gpu_check_without_a_gpu_and_without_dry_run_says_so(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out", str(tmp_path / "x.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "no CUDA device is visible" in done.stderr and "--dry-run" in done.stderr
