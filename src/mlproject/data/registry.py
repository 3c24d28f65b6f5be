"""The dataset registry: every corpus key the suite knows, where it comes from, how it is split.

Hub corpora load through `datasets.load_dataset(hub_path, hub_name, data_files=...)`. Repositories
that still ship a loading script (which `datasets` >= 4 refuses to run) are read through their
data files instead: `hub_path` is then a packaged builder ("json", "parquet") and `data_files`
points at `hf://` paths (for the Hub's automatic Parquet export, revision `refs/convert/parquet`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlproject.data.config import default_cache_dir
from mlproject.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    """One corpus: its origin, splits and the tokenizer vocab size it gets by default."""

    key: str
    description: str
    source: str  # Hub repository id, or a word for local/offline corpora (logged as the dataset source)
    hub_path: str | None  # first argument of `datasets.load_dataset`; None for non-hub corpora
    hub_name: str | None  # the Hub config name (e.g. "wikitext-103-raw-v1")
    splits: tuple[str, ...]
    val_split: str | None  # the named validation split; None: a seeded held-out fraction of train
    text_field: str
    vocab_size: int
    streaming: bool  # stream instead of downloading (large corpora); capped loads always stream
    needs_network: bool
    data_files: dict[str, str] | None = None  # split -> file pattern, for builder-style `hub_path`
    join_lines: bool = False  # rows are lines of articles (WikiText): one document per article


_OWT10K_PARQUET = "hf://datasets/stas/openwebtext-10k@refs%2Fconvert%2Fparquet/plain_text/train/*.parquet"
_REDPAJAMA_JSONL = "hf://datasets/togethercomputer/RedPajama-Data-1T-Sample/*.jsonl"

REGISTRY: dict[str, DatasetSpec] = {spec.key: spec for spec in (
    DatasetSpec("small", "OpenWebText-10K: the first 10k OpenWebText documents", "stas/openwebtext-10k",
                "parquet", None, ("train",), None, "text", 16384, streaming=False, needs_network=True,
                data_files={"train": _OWT10K_PARQUET}),
    DatasetSpec("large", "WikiText-103 (raw)", "Salesforce/wikitext", "Salesforce/wikitext", "wikitext-103-raw-v1",
                ("train", "validation", "test"), "validation", "text", 32768, streaming=False, needs_network=True,
                join_lines=True),
    DatasetSpec("wikitext2", "WikiText-2 (raw)", "Salesforce/wikitext", "Salesforce/wikitext", "wikitext-2-raw-v1",
                ("train", "validation", "test"), "validation", "text", 16384, streaming=False, needs_network=True,
                join_lines=True),
    DatasetSpec("tinystories", "TinyStories: short synthetic stories", "roneneldan/TinyStories",
                "roneneldan/TinyStories", None, ("train", "validation"), "validation", "text", 8192,
                streaming=False, needs_network=True),
    DatasetSpec("openwebtext", "OpenWebText (GPT-2's WebText reproduction)", "Skylion007/openwebtext",
                "Skylion007/openwebtext", None, ("train",), None, "text", 50257, streaming=True,
                needs_network=True),
    DatasetSpec("c4_en", "C4 English (cleaned Common Crawl)", "allenai/c4", "allenai/c4", "en",
                ("train", "validation"), "validation", "text", 32768, streaming=True, needs_network=True),
    # The Pile ships .jsonl.zst shards: reading them needs the `zstandard` package.
    DatasetSpec("pile", "The Pile, uncopyrighted subset", "monology/pile-uncopyrighted",
                "monology/pile-uncopyrighted", None, ("train", "validation", "test"), "validation", "text",
                50257, streaming=True, needs_network=True),
    DatasetSpec("redpajama", "RedPajama 1T sample (streamed shard by shard)",
                "togethercomputer/RedPajama-Data-1T-Sample", "json", None, ("train",), None, "text", 32000, streaming=True, needs_network=True,
                data_files={"train": _REDPAJAMA_JSONL}),
    DatasetSpec("local_jsonl", "local JSONL or text files (--local-path, $LOCAL_TEXT_DATA_PATH)", "local",
                None, None, ("train",), None, "text", 16384, streaming=False, needs_network=False),
    DatasetSpec("pydocs", "offline: Python standard library docstrings and reference topics", "python-stdlib",
                None, None, ("train",), None, "text", 8192, streaming=False, needs_network=False),
)}


def get_spec(key: str) -> DatasetSpec:
    """The registry entry for `key`, or a ConfigError naming the known keys."""
    try:
        return REGISTRY[key]
    except KeyError:
        raise ConfigError(f"unknown dataset {key!r}; known datasets: {', '.join(REGISTRY)}") from None


def cached_token_dirs(key: str, cache_dir: str | Path | None = None) -> list[Path]:
    """Complete token caches of dataset `key` under the cache root (both splits written)."""
    root = Path(cache_dir or default_cache_dir()).expanduser() / "tokens"
    if not root.is_dir():
        return []
    return sorted(d for d in root.glob(f"{key}-*")
                  if (d / "train.json").is_file() and (d / "val.json").is_file())


def format_registry_table(cache_dir: str | None = None) -> str:
    """The registry as a text table, with whether a token cache exists locally."""
    header = ("key", "source", "splits", "vocab", "network", "cached", "description")
    rows = [header]
    for spec in REGISTRY.values():
        cached = len(cached_token_dirs(spec.key, cache_dir))
        splits = "/".join(spec.splits) + ("" if spec.val_split else " (+held-out val)")
        rows.append((spec.key, spec.source, splits, str(spec.vocab_size), "yes" if spec.needs_network else "no",
                     f"yes ({cached})" if cached else "no", spec.description))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    root = Path(cache_dir or default_cache_dir()).expanduser()
    return "\n".join([*lines, f"cache: {root}"])
