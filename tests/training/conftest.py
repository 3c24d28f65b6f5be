"""Fixtures of the trainer tests: the tiny corpus prepared in the session token cache
(tests/conftest.py), the tiny model, and training child processes.

The resume, signal and DDP tests train in subprocesses (train_child.py) that read the same
cache through MLPROJECT_CACHE_DIR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TINY_DATA, TINY_MODEL
from mlproject.data.config import DataConfig, DataRuntimeConfig
from mlproject.model.config import GPTConfig

CHILD = Path(__file__).with_name("train_child.py")


@pytest.fixture(autouse=True)
def offline_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPROJECT_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def data(cache_dir: Path):
    from mlproject.data.prepare import prepare_data

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return prepare_data(DataConfig(**TINY_DATA), DataRuntimeConfig(cache_dir=str(cache_dir)))


@pytest.fixture
def model_cfg() -> GPTConfig:
    return GPTConfig(**TINY_MODEL)


def _start_child(spec: dict, env: dict[str, str] | None = None) -> subprocess.Popen:
    spec = {**spec, "model": {**TINY_MODEL, **spec.get("model", {})}, "data": TINY_DATA}
    return subprocess.Popen([sys.executable, str(CHILD), json.dumps(spec)], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _child_result(proc: subprocess.Popen, timeout: float = 180) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    (line,) = [l for l in out.splitlines() if l.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


@pytest.fixture
def start_child():
    """`start_child(spec, env=None)`: train_child.py training the tiny model on the tiny corpus
    (`spec["model"]` overrides model fields), its output piped."""
    return _start_child


@pytest.fixture
def child_result():
    """`child_result(proc)`: the RESULT of a child that exits 0 (its output is the failure message)."""
    return _child_result
