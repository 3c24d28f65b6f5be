"""Fixtures of the original-suite tests: one working directory, SQLite store and token cache per session.

The original README chains its commands through local files (train writes
`checkpoints/<run-name>.last.pt`, generate reads it; compare writes
`research_runs/compare/<name>/results.jsonl`, plot reads it), so they all run as subprocesses in
one working directory, in the order the README gives them: the fixtures below run each
producing command once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from compat_helpers import SHRINK, Ran, Shell
from helpers import VENV_BIN


@pytest.fixture(scope="session")
def sh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    from mlflow import MlflowClient

    workdir = tmp_path_factory.mktemp("original-suite")
    cache = tmp_path_factory.mktemp("cache")
    uri = f"sqlite:///{workdir}/mlflow.db"
    # Created once, before any subprocess (concurrent migrations of a fresh SQLite file fail);
    # from the working directory, so artifacts land there too.
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        MlflowClient(tracking_uri=uri).search_experiments()
    finally:
        os.chdir(cwd)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env.update(MLFLOW_TRACKING_URI=uri, MLPROJECT_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               # the original's commands in its profile (docs/migration.md): its local files where it wrote them
               MLPROJECT_PROFILE="original")
    yield Shell(workdir, env)


@pytest.fixture
def tracking(sh: Shell) -> Iterator[str]:
    """This process's MLflow client pointed at the session store (to check what the commands logged)."""
    import mlflow

    mlflow.set_tracking_uri(sh.env["MLFLOW_TRACKING_URI"])
    yield sh.env["MLFLOW_TRACKING_URI"]
    mlflow.set_tracking_uri(None)


# The producing commands of the README, each run once per session.

@pytest.fixture(scope="session")
def trained(sh: Shell) -> Ran:
    return sh.run(f"""mlproject train \\
  --dataset pydocs \\
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
  {SHRINK} --val-checking 2""")


@pytest.fixture(scope="session")
def compared(sh: Shell) -> Ran:
    return sh.run(f"""mlproject compare \\
  --dataset pydocs \\
  --models gpt2 gpt3 \\
  --seeds 42 43 44 \\
  --n-layer 8 --n-head 8 --d-model 512 \\
  --epochs 3 --max-steps 2000 \\
  --val-checking \\
  --experiment-name gpt2_vs_gpt3_small_fair \\
  {SHRINK} --seeds 42 43 --log-model false""")


@pytest.fixture(scope="session")
def ablated(sh: Shell) -> Ran:
    return sh.run(f"""mlproject ablate \\
  --model-version gpt3 \\
  --dataset pydocs \\
  --ablation-axis norm_type \\
  --ablation-values layernorm rmsnorm \\
  --seeds 42 43 \\
  --n-layer 8 --n-head 8 --d-model 512 \\
  --epochs 3 --max-steps 2000 \\
  --val-checking \\
  --experiment-name norm_ablation_gpt3_small \\
  {SHRINK} --log-model false""")
