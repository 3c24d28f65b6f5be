"""Helpers of the research tests: the tiny config, unique names, child-run lookup."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# Two layers of width 64 on 32-token windows, eight steps: a child run takes seconds on 2 cores.
TINY = {
    "model": {"n_layer": 2, "n_head": 2, "d_model": 64, "block_size": 32},
    "data": {"dataset": "pydocs", "vocab_size": 512, "max_train_docs": 200, "max_val_docs": 20},
    "train": {"batch_size": 4, "max_steps": 8, "eval_interval": 4, "eval_batches": 2, "log_interval": 2,
              "save_every": 4, "warmup": 2, "device": "cpu", "num_threads": 1, "progress": "lines"},
    "tracking": {"log_model": False},
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write_yaml(path: Path, experiment: str, extra: dict | None = None, **sections: dict) -> Path:
    """A tiny sweep YAML: TINY's sections updated per section, plus `extra` top-level sections."""
    data = {name: dict(values) for name, values in TINY.items()}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    data["tracking"]["experiment_name"] = experiment
    data["tracking"].setdefault("output_dir", str(path.parent / "runs"))
    data.update(extra or {})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def children_of(parent_run_id: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
