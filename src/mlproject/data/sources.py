"""Where documents come from: the Hub, local JSONL/text files or the offline `pydocs` corpus.

`resolve_corpus(cfg)` turns a DataConfig into a `Corpus`: the settings that select its documents
(hashed into the cache key) and `documents()`, a stream of (split, text) pairs.

Validation split: the corpus's named split when it has one; otherwise a held-out fraction of
the training stream, chosen per document by hashing (split_seed, document index). Hashing needs
no shuffle buffer and no length, so it works the same on streams and is stable under caps.

Caps (max_train_docs / max_val_docs) are applied while reading: a capped Hub corpus is always
streamed, so it is never downloaded whole to be cut afterwards. With a held-out split and only
max_train_docs set, validation gets the held-out documents met before the training cap is
reached (about val_fraction of what was read).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from mlproject.data.cache import FORMAT_VERSION
from mlproject.data.config import DataConfig, DataRuntimeConfig
from mlproject.data.pydocs import build_pydocs, corpus_name, read_pydocs
from mlproject.data.registry import DatasetSpec, get_spec
from mlproject.errors import ConfigError, MlprojectError

SPLITS = ("train", "val")
_TRUE = {"1", "ON", "YES", "TRUE"}
_LOCAL_SUFFIXES = {"json": (".jsonl", ".json"), "text": (".txt",)}
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = \n?$")  # " = Title = ", not " = = Section = = "


@dataclass(frozen=True)
class LocalFiles:
    """local_jsonl settings, flags first, then $LOCAL_TEXT_DATA_PATH/_FORMAT and $LOCAL_TEXT_FIELD."""

    paths: tuple[Path, ...]
    format: str  # "json": one object per line; "text": one document per blank-line-separated block
    field: str


@dataclass(frozen=True)
class Corpus:
    """A dataset with the settings that select its train and validation documents."""

    spec: DatasetSpec
    cache_root: Path
    max_train_docs: int | None
    max_val_docs: int | None
    val_fraction: float
    split_seed: int
    local: LocalFiles | None = None

    @property
    def val_split(self) -> str:
        """"named:<split>" or "heldout:<fraction>@seed<seed>" (recorded with every run)."""
        if self.spec.val_split:
            return f"named:{self.spec.val_split}"
        return f"heldout:{self.val_fraction:g}@seed{self.split_seed}"

    def settings(self) -> dict[str, Any]:
        """Everything that decides which documents land in which split."""
        spec = self.spec
        out: dict[str, Any] = {"format_version": FORMAT_VERSION, "dataset": spec.key, "val_split": self.val_split,
                               "max_train_docs": self.max_train_docs, "max_val_docs": self.max_val_docs}
        if self.local is not None:  # size and mtime: editing a file invalidates its caches
            out["local"] = {"format": self.local.format, "field": self.local.field,
                            "files": [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in self.local.paths]}
        elif spec.key == "pydocs":
            out["corpus"] = corpus_name()
        else:
            out["hub"] = [spec.hub_path, spec.hub_name, spec.data_files, spec.text_field, spec.join_lines]
        return out

    @property
    def key(self) -> str:
        """Short hash of `settings()`: names the tokenizer and token caches of this corpus."""
        blob = json.dumps(self.settings(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def documents(self, splits: tuple[str, ...] = SPLITS) -> Iterator[tuple[str, str]]:
        """(split, text) for the requested splits ("train", "val"), caps applied, empty docs skipped."""
        if self.spec.val_split:
            if "train" in splits:
                yield from (("train", t) for t in islice(self._texts("train"), self.max_train_docs))
            if "val" in splits:
                yield from (("val", t) for t in islice(self._texts(self.spec.val_split), self.max_val_docs))
            return
        yield from self._held_out(splits)

    def _held_out(self, splits: tuple[str, ...]) -> Iterator[tuple[str, str]]:
        counts = {"train": 0, "val": 0}
        caps = {"train": self.max_train_docs, "val": self.max_val_docs}

        def done(split: str) -> bool:
            if caps[split] is not None:
                return counts[split] >= caps[split]
            # uncapped validation ends with a capped train split (see the module docstring)
            return split == "val" and caps["train"] is not None and done("train")

        for index, text in enumerate(self._texts(self.spec.splits[0])):
            split = "val" if held_out(index, self.split_seed, self.val_fraction) else "train"
            if split in splits and not done(split):
                counts[split] += 1
                yield split, text
            if all(done(s) for s in splits):
                return

    def _texts(self, split: str) -> Iterator[str]:
        if self.local is not None:
            texts: Iterable[str] = _local_texts(self.local)
        elif self.spec.key == "pydocs":
            texts = read_pydocs(build_pydocs(self.cache_root))
        else:
            capped = self.max_train_docs is not None or self.max_val_docs is not None
            texts = _hub_texts(self.spec, split, streaming=self.spec.streaming or capped)
        return (t for t in texts if t and not t.isspace())


def held_out(index: int, seed: int, fraction: float) -> bool:
    """Whether document `index` belongs to the held-out validation split (deterministic)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def resolve_corpus(cfg: DataConfig, cache_root: Path | None = None) -> Corpus:
    """The corpus `cfg` selects, built corpora under `cache_root` (default: DataRuntimeConfig's);
    local files are resolved (and checked) here."""
    spec = get_spec(cfg.dataset)
    local = resolve_local_files(cfg) if spec.key == "local_jsonl" else None
    return Corpus(spec, cache_root or DataRuntimeConfig().cache_root, cfg.max_train_docs, cfg.max_val_docs, cfg.val_fraction, cfg.split_seed,
                  local)


# ----------------------------------------------------------------------------- local files

def resolve_local_files(cfg: DataConfig) -> LocalFiles:
    """local_jsonl settings: config fields (flags) win over the environment variables."""
    raw = cfg.local_path or os.environ.get("LOCAL_TEXT_DATA_PATH")
    if not raw:
        raise ConfigError("dataset 'local_jsonl' needs files: pass --local-path FILE|GLOB[,FILE...] "
                          "or set LOCAL_TEXT_DATA_PATH")
    fmt = cfg.local_format or os.environ.get("LOCAL_TEXT_DATA_FORMAT") or "json"
    if fmt not in _LOCAL_SUFFIXES:
        raise ConfigError(f"LOCAL_TEXT_DATA_FORMAT={fmt!r} is not a valid format; expected json or text")
    text_field = cfg.local_field or os.environ.get("LOCAL_TEXT_FIELD") or "text"
    paths: list[Path] = []
    for entry in (e.strip() for e in raw.split(",")):
        if entry:
            paths += [p for p in _expand(entry, fmt) if p not in paths]
    if not paths:
        raise ConfigError(f"local_path={raw!r} names no file")
    return LocalFiles(tuple(paths), fmt, text_field)


def _expand(entry: str, fmt: str) -> list[Path]:
    """Files of one path entry: a file, a glob (sorted) or a directory (its files of this format)."""
    path = Path(entry).expanduser()
    if any(c in entry for c in "*?["):
        matches = [Path(p) for p in sorted(glob.glob(str(path), recursive=True)) if Path(p).is_file()]
    elif path.is_dir():
        matches = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _LOCAL_SUFFIXES[fmt])
    else:
        matches = [path] if path.is_file() else []
    if not matches:
        raise ConfigError(f"local_path entry {entry!r} matches no file")
    return [p.resolve() for p in matches]


def _local_texts(local: LocalFiles) -> Iterator[str]:
    for path in local.paths:
        try:
            yield from (_json_texts(path, local.field) if local.format == "json" else _text_blocks(path))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _json_texts(path: Path, text_field: str) -> Iterator[str]:
    # Bytes, decoded line by line: a text-mode read of a long line holds its decoded chunks and
    # their join at once (3x the line at the peak instead of 2x).
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: not UTF-8 text ({exc.reason} at byte {exc.start} of the line)"
                                  ) from None
            del raw
            if not line or line.isspace():  # not line.strip(): a copy of the line
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: invalid JSON ({exc.msg}); "
                                  "local_format=json expects one JSON object per line") from None
            if not isinstance(record, dict) or text_field not in record:
                fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise ConfigError(f"{path}:{lineno}: no field {text_field!r} (found: {fields}); "
                                  "set --local-field or LOCAL_TEXT_FIELD")
            if not isinstance(record[text_field], str):
                raise ConfigError(f"{path}:{lineno}: field {text_field!r} is "
                                  f"{type(record[text_field]).__name__}, expected a string")
            text = record[text_field]
            del line, record  # a long line is held once while its text is used, not twice
            yield text


def _text_blocks(path: Path) -> Iterator[str]:
    """One document per block of lines separated by blank lines (a paragraph, a story, a section).

    Blocks rather than whole files, so a single large file still splits into many documents
    (and the held-out validation split has something to hold out).
    """
    block: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                block.append(line)
            elif block:
                yield "".join(block).rstrip("\n")
                block = []
    if block:
        yield "".join(block).rstrip("\n")


# ----------------------------------------------------------------------------- the Hub

def hub_offline() -> bool:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set to a true value."""
    return any(os.environ.get(v, "").strip().upper() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _offline_hint() -> str:
    return ("use --dataset pydocs (built offline from the Python standard library) or "
            "--dataset local_jsonl --local-path FILES (your own JSONL/text files) instead")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


_REACHED: set[str] = set()  # Hub repositories already probed by this process


def check_hub(spec: DatasetSpec, timeout: float = 10.0) -> None:
    """Fail fast, in one line, when `spec` lives on the Hub and the Hub is off or unreachable."""
    if not spec.needs_network:
        return
    if hub_offline():
        raise MlprojectError(f"dataset {spec.key!r} needs the Hugging Face Hub ({spec.source}) but "
                             f"HF_HUB_OFFLINE is set; {_offline_hint()}")
    if spec.source in _REACHED:
        return
    from huggingface_hub import HfApi

    try:
        HfApi().dataset_info(spec.source, timeout=timeout)
    except Exception as exc:  # connection refused, DNS, timeout, HTTP errors: all one line for the user
        raise MlprojectError(f"dataset {spec.key!r}: cannot reach {spec.source} on the Hugging Face Hub "
                             f"({_one_line(exc)}); {_offline_hint()}") from exc
    _REACHED.add(spec.source)


def _hub_texts(spec: DatasetSpec, split: str, *, streaming: bool) -> Iterator[str]:
    """Texts of one split through `datasets.load_dataset` (lazily: nothing loads until iterated)."""
    check_hub(spec)
    from datasets import load_dataset

    try:
        ds = load_dataset(spec.hub_path, spec.hub_name, data_files=spec.data_files, split=split,
                          streaming=streaming)
    except Exception as exc:  # the datasets/hub stack raises many types; the user needs one line
        raise MlprojectError(f"dataset {spec.key!r}: loading {spec.source} ({split}) failed: {_one_line(exc)}") from exc
    rows = (_field(row, spec) for row in ds)
    yield from _articles(rows) if spec.join_lines else rows


def _field(row: dict[str, Any], spec: DatasetSpec) -> str:
    if spec.text_field not in row:
        raise MlprojectError(f"dataset {spec.key!r}: rows have no field {spec.text_field!r} "
                             f"(found: {', '.join(row)})")
    return row[spec.text_field]


def _articles(lines: Iterable[str]) -> Iterator[str]:
    """WikiText rows are lines; an article starts at each top-level " = Title = " heading."""
    article: list[str] = []
    for line in lines:
        if _WIKITEXT_TITLE.match(line) and article:
            yield "".join(article).strip("\n")
            article = []
        article.append(line)
    if article:
        yield "".join(article).strip("\n")
