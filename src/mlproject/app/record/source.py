"""The source half of a run's record: the commit, the uncommitted change, the untracked files.

`git_commit` and `git_dirty` say that a result came from a modified tree but not how it was
modified; this keeps the modification (`git diff HEAD --binary`, applied again by
`materialise.materialised_source`) and the small untracked text files under the package and
`configs/` that a run may have read. A copy installed outside git (a wheel in site-packages)
has no commit: its `.py` files are hashed instead, so a later check still sees an edit.

Capture never fails a run: a git error becomes "no source record" with the reason.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mlproject.secrets import scrub

PATCH_LIMIT = 1_000_000  # bytes of `git diff HEAD` logged whole; a larger patch is summarised
UNTRACKED_LIMIT = 64 << 10  # an untracked text file up to this size is included
UNTRACKED_LISTED = 1000  # entries of the untracked list kept (a tree full of data files)
CONFIGS = "configs"
GIT_TIMEOUT = 20


class GitError(Exception):
    """A git command that failed: its first line of stderr."""


@dataclass(frozen=True)
class UntrackedFile:
    path: str  # relative to the repository root, POSIX separators
    included: bool
    sha256: str = ""  # of the file's bytes, when included


@dataclass
class SourceRecord:
    """What the run's code was. `commit` is None outside git (then `file_hashes`, and `reason`)."""

    package_version: str
    commit: str | None = None
    package_dir: str = ""  # the package folder relative to the repository root (src/mlproject)
    dirty: bool = False
    patch: bytes | None = None  # scrubbed; None when clean or summarised
    patch_sha256: str = ""  # of the patch as the tree gave it (before scrubbing): compared across machines
    patch_size: int = 0
    patch_summary: str = ""  # a diffstat, when the patch was over the limit and not logged whole
    patch_scrubbed: bool = False  # credentials were replaced in the logged patch
    untracked: list[UntrackedFile] = field(default_factory=list)
    untracked_more: int = 0  # untracked files left off the list
    untracked_text: dict[str, str] = field(default_factory=dict)  # included files: path -> scrubbed text
    file_hashes: dict[str, str] = field(default_factory=dict)  # non-git copy: relative .py path -> sha256
    reason: str = ""  # why there is no git record

    @property
    def summarised(self) -> bool:
        return bool(self.patch_summary)


def git(repo: Path, *args: str, text: bool = True) -> str | bytes:
    """stdout of `git -C repo ARGS`; GitError with git's own first line on failure."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=GIT_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise GitError(f"git {args[0]}: {exc}") from exc
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {args[0]}: {lines[0] if lines else f'exit {done.returncode}'}")
    return done.stdout.decode("utf-8", "surrogateescape") if text else done.stdout


def repo_of(package_dir: Path) -> tuple[Path, str, str]:
    """(repository root, HEAD commit, package folder relative to the root) of the git work tree
    tracking `package_dir`.

    A package inside a repository's ignored folder (site-packages of an in-repo venv) is not
    that repository's code: its `__init__.py` must be tracked.
    """
    out = str(git(package_dir, "rev-parse", "--show-toplevel", "--show-prefix", "HEAD"))
    root, prefix, commit = out.split("\n")[:3]  # the prefix line is empty at the root
    git(package_dir, "ls-files", "--error-unmatch", "--", "__init__.py")
    return Path(root), commit, prefix.rstrip("/")


def capture_source(package_dir: Path, package_version: str, *, patch_limit: int = PATCH_LIMIT) -> SourceRecord:
    """The source record of the package at `package_dir`: git's view, or file hashes outside git."""
    package_dir = package_dir.resolve()
    try:
        root, commit, package_rel = repo_of(package_dir)
    except GitError as exc:
        return SourceRecord(package_version, reason=f"no git record ({exc})",
                            file_hashes=file_hashes(package_dir))
    record = SourceRecord(package_version, commit=commit, package_dir=package_rel)
    try:
        _add_patch(record, root, patch_limit)
        _add_untracked(record, root)
    except GitError as exc:
        return SourceRecord(package_version, commit=commit, package_dir=record.package_dir,
                            reason=f"no source record ({exc})")
    return record


def _add_patch(record: SourceRecord, root: Path, patch_limit: int) -> None:
    """`git diff HEAD --binary`: logged scrubbed, or summarised (diffstat + sha256) over the limit."""
    raw = git(root, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff", text=False)
    assert isinstance(raw, bytes)
    record.dirty = bool(raw)
    if not raw:
        return
    record.patch_sha256 = hashlib.sha256(raw).hexdigest()
    record.patch_size = len(raw)
    if len(raw) > patch_limit:
        stat = str(git(root, "diff", "HEAD", "--stat", "--no-color"))
        record.patch_summary = scrub(stat)
        return
    clean = scrub_bytes(raw)
    record.patch = clean
    record.patch_scrubbed = clean != raw


def _add_untracked(record: SourceRecord, root: Path) -> None:
    """Untracked (not ignored) files listed; small text files under the package or configs/ included."""
    out = str(git(root, "ls-files", "--others", "--exclude-standard", "-z"))
    paths = sorted(p for p in out.split("\0") if p)
    record.untracked_more = max(0, len(paths) - UNTRACKED_LISTED)
    for rel in paths[:UNTRACKED_LISTED]:
        text = _small_text(root / rel) if _wanted(rel, record.package_dir) else None
        if text is None:
            record.untracked.append(UntrackedFile(rel, included=False))
            continue
        record.untracked.append(UntrackedFile(rel, included=True, sha256=hashlib.sha256(text).hexdigest()))
        record.untracked_text[rel] = scrub(text.decode("utf-8"))


def _wanted(rel: str, package_dir: str) -> bool:
    return any(rel.startswith(f"{folder}/") for folder in (package_dir, CONFIGS) if folder)


def _small_text(path: Path) -> bytes | None:
    """The file's bytes when it is a small UTF-8 text file (no NUL), else None."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > UNTRACKED_LIMIT:
            return None
        data = path.read_bytes()
        data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return None if b"\0" in data else data


def scrub_bytes(data: bytes) -> bytes:
    """`scrub` over bytes that may hold binary hunks: undecodable bytes pass through unchanged."""
    return scrub(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def file_hashes(package_dir: Path) -> dict[str, str]:
    """sha256 of every .py file under `package_dir`, by POSIX path relative to it."""
    hashes = {}
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        try:
            hashes[path.relative_to(package_dir).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:  # unreadable: recorded as such, never a failed run
            hashes[path.relative_to(package_dir).as_posix()] = "unreadable"
    return hashes
