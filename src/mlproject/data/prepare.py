"""`prepare_data`: the data stage in one call: corpus -> BPE tokenizer -> memory-mapped token caches.

Cache layout under the cache root (`DataRuntimeConfig.cache_dir`, `$MLPROJECT_CACHE_DIR`, ~/.cache/mlproject):

    corpora/pydocs-py3.X-v1.jsonl                 the offline corpus, built once
    tokenizers/<dataset>-<corpus key>-v<vocab>-s<sample MB>mb.json
    tokens/<dataset>-<corpus key>-<tokenizer hash>/{train,val}.{bin,json}
    locks/<dataset>-<corpus key>.lock

The corpus key hashes everything that selects the documents (dataset, local files and their
sizes/mtimes, caps, split settings), so a tokenizer or token cache is never reused for another
corpus. A second call with the same config only opens files. Several processes may call it at
once for the same config (compare --parallel, torchrun ranks): an fcntl lock serialises building
and every file is written atomically, so one process builds and the others reuse.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from mlproject.data.cache import CorruptTokenCache, TokenCache, TokenCacheWriter, file_lock, open_token_cache
from mlproject.data.config import DataConfig, DataRuntimeConfig
from mlproject.data.fast_encode import fast_encoder, hf_encoder
from mlproject.data.pieces import Piece, document_pieces
from mlproject.data.pydocs import corpus_name
from mlproject.data.sources import SPLITS, Corpus, check_hub, resolve_corpus
from mlproject.data.tokenizer import load_tokenizer, save_tokenizer, special_ids, tokenizer_hash, train_tokenizer
from mlproject.errors import ConfigError, MlprojectError
from mlproject.outdir import check_writable

DOCS_PER_BATCH = 256  # pieces of documents per encode_batch call: large enough to keep every core busy
SAMPLE_DOCS = 200  # pieces on which the fast encoder must give exactly the tokenizer's ids
BATCH_BYTES = 1 << 20  # ... and at most 1 MB of text (pieces: `data.pieces`), so memory does not grow with documents
# A document is read whole: its line, and its text as the JSON parser builds it and as it is
# returned. One character outside the BMP (an emoji) makes a Python str 4 bytes a character, so
# the worst case is 1 + 4 + 4 times the line's size (a 48 MB line with emoji: 6x; ASCII: 3x).
DOCUMENT_FACTOR = 9

Log = Callable[[str], object]


@dataclass
class PreparedData:
    """Everything the trainer needs from the data stage."""

    tokenizer: Tokenizer
    tokenizer_path: Path
    train: TokenCache
    val: TokenCache
    vocab_size: int  # the tokenizer's size (may be below the requested one on a tiny corpus)
    eot_id: int
    pad_id: int
    info: dict[str, str | int | float]  # flat: logged as run params and with mlflow.log_input


def prepare_data(cfg: DataConfig, runtime: DataRuntimeConfig | None = None, *, log: Log = print) -> PreparedData:
    """Tokenizer and token caches for `cfg`, built on first use and reused afterwards, under the
    cache root of `runtime` (default: DataRuntimeConfig())."""
    cfg.validate()
    runtime = runtime or DataRuntimeConfig()
    # A cache root under a regular file (or read-only) is named now, not met as an errno deep inside.
    check_writable(runtime.cache_root, "cache_dir" if runtime.cache_dir else "MLPROJECT_CACHE_DIR")
    corpus = resolve_corpus(cfg, runtime.cache_root)
    name = f"{corpus.spec.key}-{corpus.key}"
    root = runtime.cache_root
    with file_lock(root / "locks" / f"{name}.lock"):
        tokenizer, tokenizer_path, origin = _tokenizer(cfg, corpus, root / "tokenizers", name, log)
        tok_hash = tokenizer_hash(tokenizer_path)
        token_dir = root / "tokens" / f"{name}-{tok_hash}"
        try:
            train, val = (open_token_cache(token_dir / f"{split}.bin") for split in SPLITS)
            log(f"data: reusing token caches in {token_dir} (content hashes verified)")
        except CorruptTokenCache as exc:
            log(f"data: rebuilding the token caches: {exc}")
            train, val = build_token_caches(corpus, tokenizer, tok_hash, token_dir, runtime.num_workers, log)
        except MlprojectError:  # not built yet
            train, val = build_token_caches(corpus, tokenizer, tok_hash, token_dir, runtime.num_workers, log)
    eot_id, pad_id = special_ids(tokenizer)
    vocab_size = tokenizer.get_vocab_size()
    # From the bytes the model trains on (and the tokenizer that gives them meaning), not from counts.
    content = f"{tok_hash}:{train.header['content_hash']}:{val.header['content_hash']}"
    digest = hashlib.sha256(content.encode()).hexdigest()[:12]
    info: dict[str, str | int | float] = {
        "dataset": corpus.spec.key, "source": corpus.spec.source, "val_split": corpus.val_split,
        "vocab_size": vocab_size, "tokenizer": origin, "tokenizer_hash": tok_hash,
        "train_tokens": len(train), "val_tokens": len(val), "train_docs": train.num_docs, "val_docs": val.num_docs,
        "train_bytes": int(train.header["text_bytes"]), "val_bytes": int(val.header["text_bytes"]),
        "token_dtype": train.tokens.dtype.name, "corpus_key": corpus.key, "digest": digest,
    }
    return PreparedData(tokenizer, tokenizer_path, train, val, vocab_size, eot_id, pad_id, info)


def _tokenizer(cfg: DataConfig, corpus: Corpus, folder: Path, name: str, log: Log) -> tuple[Tokenizer, Path, str]:
    """(tokenizer, its path, "file" | "trained"): a given tokenizer.json, a cached one, or a new one."""
    if cfg.tokenizer_path:
        path = Path(cfg.tokenizer_path).expanduser().resolve()
        tokenizer = load_tokenizer(path)
        if cfg.vocab_size is not None and cfg.vocab_size != tokenizer.get_vocab_size():
            raise ConfigError(f"vocab_size={cfg.vocab_size} contradicts tokenizer_path {path} "
                              f"({tokenizer.get_vocab_size()} tokens); drop one of them")
        return tokenizer, path, "file"
    vocab_size = cfg.vocab_size or corpus.spec.vocab_size
    path = folder / f"{name}-v{vocab_size}-s{cfg.tokenizer_sample_mb:g}mb.json"  # the sample bound is in the key
    if path.is_file():
        log(f"data: reusing tokenizer {path}")
        return load_tokenizer(path), path, "trained"
    check_hub(corpus.spec)  # before announcing work that needs the Hub
    log(f"data: training a {vocab_size}-token byte-level BPE on the {corpus.spec.key} train split")
    t0 = time.perf_counter()
    counter = _Counter(limit_bytes=int(cfg.tokenizer_sample_mb * 1e6))
    texts = counter.count(document_pieces(corpus.documents(("train",))))
    tokenizer = train_tokenizer(tqdm(texts, desc="training BPE", unit="piece", disable=None), vocab_size)
    if counter.docs == 0:
        source = f" (local_path={cfg.local_path!r})" if cfg.local_path else ""
        raise MlprojectError(f"dataset {corpus.spec.key!r}{source}: the train split has no documents")
    save_tokenizer(tokenizer, path)
    sampled = f", the first {cfg.tokenizer_sample_mb:g} MB of the split" if counter.truncated else ""
    log(f"data: tokenizer trained on {counter.docs} documents ({counter.bytes / 1e6:.1f} MB{sampled}) in "
        f"{time.perf_counter() - t0:.1f}s: {tokenizer.get_vocab_size()} tokens -> {path}")
    return load_tokenizer(path), path, "trained"


class _Counter:
    """Passes on the texts of pieces, counting documents and UTF-8 bytes; stops once `limit_bytes` passed.

    The bound keeps BPE training on a 40 GB corpus to minutes and its memory (word counts) flat:
    merges learnt from a few hundred MB of text are the ones a larger sample would learn. It is
    checked per piece, so one huge document is sampled as far as the bound too.
    """

    def __init__(self, limit_bytes: int | None = None) -> None:
        self.docs = 0
        self.bytes = 0
        self.limit = limit_bytes
        self.truncated = False

    def count(self, pieces: Iterable[Piece]) -> Iterator[str]:
        starts = True  # the next piece begins a document
        for _, text, ends in pieces:
            if self.limit is not None and self.bytes >= self.limit:
                self.truncated = True
                return
            self.docs += starts
            self.bytes += len(text.encode("utf-8"))
            starts = ends
            yield text


def _batches(pieces: Iterable[Piece]) -> Iterator[tuple[list[Piece], int]]:
    """(pieces, their UTF-8 bytes) in batches of at most BATCH_BYTES and DOCS_PER_BATCH pieces
    (a piece holds at most BATCH_BYTES: `data.pieces.PIECE_CHARS` characters of up to 4 bytes)."""
    batch: list[Piece] = []
    size = 0
    for piece in pieces:
        piece_bytes = len(piece[1].encode("utf-8"))
        if batch and (size + piece_bytes > BATCH_BYTES or len(batch) >= DOCS_PER_BATCH):
            yield batch, size
            batch, size = [], 0
        batch.append(piece)
        size += piece_bytes
    if batch:
        yield batch, size


def corpus_bytes(corpus: Corpus) -> int | None:
    """Bytes of the corpus files on disk (an estimate of its text, for the ETA), or None (the Hub)."""
    if corpus.local is not None:
        return sum(p.stat().st_size for p in corpus.local.paths)
    if corpus.spec.key == "pydocs":
        path = corpus.cache_root / "corpora" / corpus_name()
        return path.stat().st_size if path.is_file() else None
    return None


def in_flight_batches(workers: int) -> int:
    """Batches encoded or queued at once: enough to keep every worker busy while the writer catches up."""
    return 2 * workers + 1


def memory_bound_mb(workers: int) -> float:
    """Upper bound of the encoder's working set in MB, whatever the corpus size.

    Each in-flight batch holds at most BATCH_BYTES of text (documents are cut into pieces:
    `data.pieces`) as Python str (up to 4 bytes a character) and its ids as uint32 (at most one
    per byte); the encoder's own objects of one batch per worker exist only inside the worker
    (`tokenizers`' Encoding: about 100 bytes a token). The document being read and cut comes
    on top: up to DOCUMENT_FACTOR times its size while it is parsed, then its text alone.
    """
    text, ids, encodings = 4 * BATCH_BYTES, 4 * BATCH_BYTES, 100 * BATCH_BYTES
    return (in_flight_batches(workers) * (text + ids) + workers * encodings) / 1e6


def _encode_into(writers: dict[str, TokenCacheWriter], corpus: Corpus, encode: Callable[[list[str]], list[np.ndarray]],
                 workers: int) -> None:
    """Encode the corpus's documents on `workers` threads, writing each batch's ids in order."""
    # A bounded queue of futures keeps the order and the memory flat.
    pending: deque[tuple[list[Piece], int, Future[list[np.ndarray]]]] = deque()
    with ThreadPoolExecutor(workers) as pool, tqdm(desc=f"tokenizing {corpus.spec.key}", unit="B", unit_scale=True,
                                                   unit_divisor=1000, total=corpus_bytes(corpus), disable=None) as bar:

        def write_oldest() -> None:
            batch, size, future = pending.popleft()
            _write_batch(writers, batch, future)
            bar.update(size)  # tqdm shows MB/s and, with a known total, the ETA

        for batch, size in _batches(document_pieces(corpus.documents(SPLITS))):
            pending.append((batch, size, pool.submit(encode, [text for _, text, _ in batch])))
            while len(pending) >= in_flight_batches(workers) or (pending and pending[0][2].done()):
                write_oldest()
        while pending:
            write_oldest()


def build_token_caches(corpus: Corpus, tokenizer: Tokenizer, tok_hash: str, token_dir: Path,
                        num_workers: int | None, log: Log) -> tuple[TokenCache, TokenCache]:
    """Tokenize both splits in one streaming pass, in ordered parallel batches, writing incrementally.

    Memory stays within `memory_bound_mb(workers)` for any corpus size: documents are read
    lazily, at most `in_flight_batches` batches of BATCH_BYTES exist at once, and ids go to
    the token files as soon as their batch is done. Encoding runs on tiktoken where it gives the
    tokenizer's exact ids (`fast_encode`), else on `tokenizers`; both release the GIL, so the
    workers keep every core busy.
    """
    eot_id, _ = special_ids(tokenizer)
    for split in SPLITS:  # a stale header must never describe the new file
        (token_dir / f"{split}.json").unlink(missing_ok=True)
    meta = {"dataset": corpus.spec.key, "corpus_key": corpus.key, "val_split": corpus.val_split,
            "tokenizer_hash": tok_hash}
    writers = {split: TokenCacheWriter(token_dir / f"{split}.bin", vocab_size=tokenizer.get_vocab_size(),
                                       eot_id=eot_id, meta={**meta, "split": split}) for split in SPLITS}
    dtype = writers["train"].dtype
    workers = num_workers or os.cpu_count() or 1
    # The first batch: the check encodes it with `tokenizers` too, whose Encodings are the large part of the bound.
    first, _ = next(_batches(document_pieces(corpus.documents(SPLITS))), ([], 0))
    sample = [text for _, text, _ in first[:SAMPLE_DOCS]]
    encode = fast_encoder(tokenizer, dtype, sample)
    engine = "tiktoken" if encode is not None else "tokenizers"
    encode = encode or hf_encoder(tokenizer, dtype)
    log(f"data: tokenizing with {workers} worker(s) on {engine}, memory bounded by {memory_bound_mb(workers):.0f} MB "
        f"plus the document being read (up to {DOCUMENT_FACTOR}x its size)")
    t0 = time.perf_counter()
    try:
        _encode_into(writers, corpus, encode, workers)
        for split, writer in writers.items():
            if writer.num_docs == 0:
                raise MlprojectError(f"dataset {corpus.spec.key!r}: the {split} split has no documents "
                                     f"(val_split {corpus.val_split}); raise max_{split}_docs or val_fraction")
        caches = {split: writer.close() for split, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    train, val = caches["train"], caches["val"]
    seconds = time.perf_counter() - t0
    mb = (train.header["text_bytes"] + val.header["text_bytes"]) / 1e6
    log(f"data: tokenized {train.num_docs} train + {val.num_docs} val documents ({mb:.1f} MB) into "
        f"{len(train)} + {len(val)} tokens in {seconds:.1f}s ({mb / max(seconds, 1e-9):.1f} MB/s) -> {token_dir}")
    return train, val


def _write_batch(writers: dict[str, TokenCacheWriter], batch: list[Piece], future: Future[list[np.ndarray]]) -> None:
    """Each split's pieces joined back into documents; one still open at the end goes on in the next batch."""
    ids = future.result()
    for split, writer in writers.items():
        docs: list[np.ndarray] = []
        open_doc: list[np.ndarray] = []  # pieces of a document whose last piece has not come yet
        text_bytes = 0
        for (s, text, ends), piece_ids in zip(batch, ids):
            if s != split:
                continue
            open_doc.append(piece_ids)
            text_bytes += len(text.encode("utf-8"))
            if ends:
                docs.append(np.concatenate(open_doc))
                open_doc = []
        if open_doc:
            docs.append(np.concatenate(open_doc))
        if docs:
            writer.write(docs, text_bytes, last_continues=bool(open_doc))
