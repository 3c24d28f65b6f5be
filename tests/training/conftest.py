"""Fixtures of the trainer tests: one small token cache per session and a tiny model.

The cache (pydocs, 300 documents, a 512-token BPE) is built once in a session directory and
reused by the subprocesses of the resume, signal and DDP tests through MLPROJECT_CACHE_DIR.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlproject.data.config import DataConfig
from mlproject.model.config import GPTConfig

TINY_MODEL = dict(n_layer=2, n_head=2, d_model=64, block_size=32)
TINY_DATA = dict(dataset="pydocs", vocab_size=512, max_train_docs=300, max_val_docs=30)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


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
        return prepare_data(DataConfig(**TINY_DATA, cache_dir=str(cache_dir)))


@pytest.fixture
def model_cfg() -> GPTConfig:
    return GPTConfig(**TINY_MODEL)
