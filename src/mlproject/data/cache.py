"""Token caches: one flat file of token ids per split plus a small JSON header, memory-mapped.

Layout of a split `train`: `train.bin` holds every document's ids followed by `<|endoftext|>`,
back to back, as uint16 when the vocabulary fits (vocab <= 65535, GPT-2's 50257 included) and
uint32 otherwise; `train.json` holds the header (dataset, tokenizer hash, token and document
counts, dtype, and the content hash of `train.bin`). The header is written last and atomically,
so its presence marks a complete cache.

The content hash (xxh3-128, computed while the file is written) is checked every time a cache
is opened: a file overwritten at the same size (zeros, another corpus's tokens, out-of-range
ids) is refused instead of trained on. xxh3 hashes at memory speed (benchmarks/README.md:
the cost on a 1 GB cache), so the check costs a fraction of a training step per run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from mlproject.errors import MlprojectError
from mlproject.io import atomic_open, atomic_write_bytes

# 2: headers carry `content_hash`. Part of the corpus key, so version-1 caches (size-checked
# only) are never opened: they sit under other names and a new cache is built beside them.
FORMAT_VERSION = 2
HASH_NAME = "xxh3_128"
HASH_CHUNK = 16 << 20  # bytes per read when verifying: bounded memory for any cache size


class CorruptTokenCache(MlprojectError):
    """A token cache whose file does not match its header (size or content hash)."""


def content_hash(path: str | Path) -> str:
    """`xxh3_128:<hex>` of the file's bytes, hashed in 16 MiB slices of a read-only map (no copies)."""
    hasher = xxhash.xxh3_128()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped, memoryview(mapped) as view:
                for start in range(0, size, HASH_CHUNK):
                    hasher.update(view[start:start + HASH_CHUNK])
    return f"{HASH_NAME}:{hasher.hexdigest()}"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (halves disk and page-cache use), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive fcntl.flock on `path`: processes preparing the same cache take turns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class TokenCache:
    """One split's tokens (`tokens`: read-only memmap, shape (N,)) and its header."""

    path: Path
    tokens: np.ndarray
    header: dict[str, Any]

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_docs(self) -> int:
        return int(self.header["num_docs"])


def _header_path(path: Path) -> Path:
    return path.with_suffix(".json")


def open_token_cache(path: str | Path, *, verify: bool = True) -> TokenCache:
    """Memory-map the token file `path` (`<split>.bin`) after checking it against its header.

    The size is always checked; with `verify` the content hash too (reads the whole file once).
    A mismatch raises CorruptTokenCache.
    """
    path = Path(path)
    header_path = _header_path(path)
    if not header_path.is_file() or not path.is_file():
        raise MlprojectError(f"no complete token cache at {path} (missing {header_path.name} or {path.name})")
    try:
        header = json.loads(header_path.read_text(encoding="utf-8"))
        dtype = np.dtype(header["dtype"])
        expected = int(header["num_tokens"]) * dtype.itemsize
        recorded = str(header["content_hash"])
    except KeyError as exc:  # content_hash: a cache of format version 1
        raise CorruptTokenCache(f"token cache header {header_path} lacks the field {exc}; "
                                f"delete {path.parent} to rebuild it") from None
    except (ValueError, TypeError) as exc:
        raise CorruptTokenCache(f"token cache header {header_path} is unreadable ({exc}); "
                                f"delete {path.parent} to rebuild it") from None
    if path.stat().st_size != expected:
        raise CorruptTokenCache(f"token cache {path} has {path.stat().st_size} bytes, header says {expected}; "
                                f"delete {path.parent} to rebuild it")
    if verify and (actual := content_hash(path)) != recorded:
        raise CorruptTokenCache(f"token cache {path} has content hash {actual}, header says {recorded} "
                                f"(the file was modified); delete {path.parent} to rebuild it")
    if expected == 0:  # np.memmap cannot map an empty file
        return TokenCache(path, np.zeros(0, dtype=dtype), header)
    return TokenCache(path, np.memmap(path, dtype=dtype, mode="r"), header)


class TokenCacheWriter:
    """Appends tokenized documents to `<split>.bin` chunk by chunk, so memory stays flat.

    Writes go through `io.atomic_open`: `close()` renames the file into place and then writes
    the header; a writer left without `close()` (an error, a kill) leaves no cache behind.
    """

    def __init__(self, path: str | Path, *, vocab_size: int, eot_id: int, meta: dict[str, Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = token_dtype(vocab_size)
        self.eot = np.array([eot_id], dtype=self.dtype)
        self.meta = {**meta, "vocab_size": vocab_size, "eot_id": eot_id}
        self.num_tokens = 0
        self.num_docs = 0
        self.text_bytes = 0
        self.vocab_size = vocab_size
        self._hasher = xxhash.xxh3_128()  # over exactly the bytes written, so no second read
        self._open = contextlib.ExitStack()
        self._file = self._open.enter_context(atomic_open(self.path, "wb"))

    def write(self, docs: Sequence[Sequence[int]], text_bytes: int = 0, *, last_continues: bool = False) -> None:
        """Append documents (lists of ids), each followed by `<|endoftext|>`. With `last_continues`
        the last one goes on in the next write (a long document written piece by piece): it gets
        no separator yet and is counted when it ends."""
        if not docs:
            return
        parts = []
        for i, ids in enumerate(docs):
            parts.append(np.asarray(ids, dtype=self.dtype))
            if not (last_continues and i == len(docs) - 1):
                parts.append(self.eot)
        flat = np.concatenate(parts)  # (sum(len(doc) + 1),)
        if flat.size and int(flat.max()) >= self.vocab_size:  # else an IndexError deep in training
            raise MlprojectError(f"token id {int(flat.max())} is out of range for vocab_size={self.vocab_size}")
        flat.tofile(self._file)
        self._hasher.update(flat)
        self.num_tokens += int(flat.shape[0])
        self.num_docs += len(docs) - last_continues
        self.text_bytes += text_bytes

    def close(self) -> TokenCache:
        """Finish the file, write the header, and open the result."""
        self._open.close()  # renames the finished file into place
        header = {**self.meta, "num_tokens": self.num_tokens, "num_docs": self.num_docs,
                  "text_bytes": self.text_bytes, "dtype": self.dtype.name, "format_version": FORMAT_VERSION,
                  "content_hash": f"{HASH_NAME}:{self._hasher.hexdigest()}"}
        atomic_write_bytes(_header_path(self.path), json.dumps(header, indent=1, sort_keys=True).encode())
        return open_token_cache(self.path, verify=False)  # hashed while written

    def abort(self) -> None:
        """Drop the partial file."""
        reason = MlprojectError(f"token cache {self.path} aborted")
        self._open.__exit__(type(reason), reason, None)  # the temp file is removed, nothing renamed
