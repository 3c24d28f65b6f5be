"""Fixtures of the data tests: an isolated cache per test, the offline corpus built once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlproject.data.config import DataConfig, DataRuntimeConfig
from mlproject.data.prepare import PreparedData, prepare_data
from mlproject.data.pydocs import build_pydocs, corpus_name


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache root, no local_jsonl environment and no Hub."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MLPROJECT_CACHE_DIR", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("LOCAL_TEXT_DATA_PATH", "LOCAL_TEXT_DATA_FORMAT", "LOCAL_TEXT_FIELD"):
        monkeypatch.delenv(name, raising=False)
    return cache


@pytest.fixture(scope="session")
def pydocs_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full offline corpus file, built once."""
    return build_pydocs(tmp_path_factory.mktemp("pydocs-cache"))


@pytest.fixture(scope="session")
def pydocs_full(pydocs_corpus: Path) -> PreparedData:
    """The whole pydocs corpus prepared with its default 8192-token tokenizer."""
    return prepare_data(DataConfig(dataset="pydocs"), DataRuntimeConfig(cache_dir=str(pydocs_corpus.parents[1])),
                        log=lambda _: None)


@pytest.fixture
def seeded_cache(isolated_env: Path, pydocs_corpus: Path) -> Path:
    """This test's cache root with the offline corpus already in it (saves rebuilding it)."""
    target = isolated_env / "corpora" / corpus_name()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pydocs_corpus, target)
    return isolated_env


@pytest.fixture
def small_pydocs(seeded_cache: Path):
    """Factory of capped pydocs configs with a 512-token vocabulary: each prepares in well under a second
    (under `seeded_cache`, this test's $MLPROJECT_CACHE_DIR)."""

    def make(**overrides: object) -> DataConfig:
        settings: dict[str, object] = {"dataset": "pydocs", "vocab_size": 512, "max_train_docs": 40, **overrides}
        return DataConfig(**settings)  # type: ignore[arg-type]

    return make
