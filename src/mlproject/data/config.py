"""DataConfig: which corpus, how it is split and tokenized; DataRuntimeConfig: where caches live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlproject.config import check_types, field
from mlproject.errors import ConfigError


def default_cache_dir() -> str:
    """`$MLPROJECT_CACHE_DIR`, else `~/.cache/mlproject` (tokenizers, token caches, the offline corpus)."""
    return os.environ.get("MLPROJECT_CACHE_DIR") or str(Path.home() / ".cache" / "mlproject")


@dataclass
class DataConfig:
    """A corpus from the registry plus its tokenizer and caching settings."""

    dataset: str = field("pydocs", help="dataset key (see `mlproject datasets`)")
    vocab_size: int | None = field(None, help="BPE vocab size (default: the registry's for the dataset)")
    tokenizer_path: str | None = field(None, help="use this tokenizer.json instead of training one")
    max_train_docs: int | None = field(None, help="cap on training documents (streamed, never downloaded whole)")
    max_val_docs: int | None = field(None, help="cap on validation documents")
    val_fraction: float = field(0.05, help="held-out fraction when the corpus has no validation split")
    split_seed: int = field(1234, help="seed of the held-out split")
    local_path: str | None = field(None, help="local_jsonl: file, glob or comma-separated files "
                                              "(default: $LOCAL_TEXT_DATA_PATH)")
    local_format: Literal["json", "text"] | None = field(
        None, help="local_jsonl: json (one object per line) or text (one document per blank-line-separated "
                     "block) (default: $LOCAL_TEXT_DATA_FORMAT or json)")
    local_field: str | None = field(None, help="local_jsonl: text field of JSON records "
                                               "(default: $LOCAL_TEXT_FIELD or text)")
    tokenizer_sample_mb: float = field(
        100.0, help="train the BPE on at most this many MB of the train split's text (its first documents); "
                    "part of the tokenizer's cache key")

    def validate(self) -> None:
        check_types(self, source="data")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction} must be in (0, 1)")
        for name in ("vocab_size", "max_train_docs", "max_val_docs"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name}={value} must be positive")
        if not self.tokenizer_sample_mb > 0:
            raise ConfigError(f"tokenizer_sample_mb={self.tokenizer_sample_mb} must be positive (MB of text)")
        if self.vocab_size is not None and self.vocab_size < 258:
            raise ConfigError(f"vocab_size={self.vocab_size} is too small; expected at least 258 "
                              "(256 byte tokens + <|endoftext|> + <|pad|>)")


@dataclass
class DataRuntimeConfig:
    """Where the data caches live and how many threads build them: how data is prepared, never
    what it is (the runtime section of a run extends it, `training.config.RuntimeConfig`)."""

    cache_dir: str | None = field(None, help="cache root of tokenizers, token caches and corpora "
                                             "(default: $MLPROJECT_CACHE_DIR or ~/.cache/mlproject)")
    num_workers: int | None = field(None, help="tokenizer worker threads (default: all cores)")

    @property
    def cache_root(self) -> Path:
        return Path(self.cache_dir or default_cache_dir()).expanduser()

    def validate(self) -> None:
        check_types(self, source="runtime")
        if self.num_workers is not None and self.num_workers <= 0:
            raise ConfigError(f"num_workers={self.num_workers} must be positive (or null for all cores)")


@dataclass
class RegistryConfig:
    """`mlproject datasets`: the registry table, with the token caches found under one cache root."""

    cache_dir: str | None = field(None, help="cache root to inspect (default: $MLPROJECT_CACHE_DIR or "
                                             "~/.cache/mlproject)")

    def validate(self) -> None:
        check_types(self, source="datasets")


@dataclass
class PreviewConfig:
    """`mlproject dataloaders`: the batches previewed after the caches are built.

    Its own sizes, not the model's or the trainer's: a preview is a quick look, so its defaults
    are small whatever a training run would use.
    """

    block_size: int = field(128, help="tokens per previewed window (the targets add one)")
    batch_size: int = field(4, help="windows per previewed batch")
    preview_batches: int = field(2, help="batches to print")
    seed: int = field(42, help="seed of the window sampler")

    def validate(self) -> None:
        check_types(self, source="dataloaders")
        for name in ("block_size", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"dataloaders: {name}={getattr(self, name)} must be positive")
        if self.seed < 0:
            raise ConfigError(f"dataloaders: seed={self.seed} must be >= 0")
        if self.preview_batches < 0:
            raise ConfigError(f"dataloaders: preview_batches={self.preview_batches} must be >= 0 (0: build the "
                              "caches only)")
