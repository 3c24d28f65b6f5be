"""Atomic writes: a reader (or a crash) never sees half a file.

Every file the suite writes for later reading (checkpoints, token caches, results, plots,
exports) goes through `atomic_path`: the bytes are written to a temporary name in the same
folder (same file system, so the rename is atomic) and `os.replace` swaps it in only when the
write succeeded. On any error the temporary is removed and the previous file is untouched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def temp_path(path: str | os.PathLike[str]) -> Path:
    """A fresh hidden name beside `path` that keeps its suffix (matplotlib picks the format by it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")


def _umask() -> int:
    """The process umask (reading it means setting it: it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_modes(path: str | os.PathLike[str]) -> Path:
    """Give `path` (a file, or a folder and all it holds) the modes a plain `open()`/`mkdir()`
    would: 0o666 (0o777 for folders and executables) less the umask. Some writers (safetensors, mkstemp, mkdtemp) create
    0o600/0o700 entries, so one file of an export would be private while its siblings are not."""
    path = Path(path)
    mask = _umask()
    entries = [path, *path.rglob("*")] if path.is_dir() and not path.is_symlink() else [path]
    for entry in entries:
        if entry.is_symlink():
            continue
        executable = entry.is_dir() or entry.stat().st_mode & 0o111  # a script keeps its x bits
        entry.chmod((0o777 if executable else 0o666) & ~mask)
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write (a file, or a folder the caller creates); on success it
    replaces `path`. A folder replaces only an absent or empty one: `mlproject.outdir` decides
    when an existing output folder may go."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        if tmp.exists():
            plain_modes(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", *, fsync: bool = False,
                **kwargs: Any) -> Iterator[IO[Any]]:
    """An open file whose content replaces `path` when the block ends without error.

    `fsync` flushes the bytes to disk before the rename (checkpoints: after a power cut the
    new file is complete or the old one is still there)."""
    with atomic_path(path) as tmp:
        with open(tmp, mode.replace("w", "x"), **kwargs) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return Path(path)
