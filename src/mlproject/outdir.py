"""Output folders: written whole beside their place, renamed in, and never a user's files lost;
scratch folders: outside the working directory, removed when done.

A command that writes a folder (`export-hf`) fills a fresh hidden sibling and renames it into
place when the write succeeded, so a reader (or a crash) never sees half of it. Each such
folder carries a marker file listing what the suite wrote into it. An existing folder is
replaced only when it is empty or its marker covers every entry in it: then it is moved aside,
the new one renamed in, and the old one removed. Anything else (a user's folder, an earlier
export the user added files to, a file) is refused with one line, and nothing is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from mlproject.errors import MlprojectError
from mlproject.io import plain_modes, temp_path

# The one folder of this suite's local files (charts, exports, pipeline reports, local copies of
# runs): under `mlflow run` the working directory is the project, and this variable moves them.
LOCAL_DIR_ENV = "MLPROJECT_LOCAL_DIR"
LOCAL_DIR_DEFAULT = Path("mlproject-outputs")
MARKER = ".mlproject-output.json"  # {"written_by": "mlproject", "kind": ..., "entries": [top-level names], details}
# <cache>/scratch/<run id>/checkpoints: a tracked run's checkpoints on their way to the tracking store
SCRATCH = "scratch"


def _marker(folder: Path) -> dict | None:
    """The marker of `folder`, or None when it has none (or one that is not ours)."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != "mlproject" or not isinstance(data.get("entries"), list):
        return None
    return data


def _local_dir_env() -> str:
    """$MLPROJECT_LOCAL_DIR, stripped ("" when unset or blank): the one reader of the variable."""
    return os.environ.get(LOCAL_DIR_ENV, "").strip()


def local_root(profile: str = "default") -> Path:
    """The folder of local files: $MLPROJECT_LOCAL_DIR if set, else the working directory in the
    original profile (relative paths, as the original's), else `mlproject-outputs`."""
    root = _local_dir_env()
    if root:
        return Path(root).expanduser()
    return Path() if profile == "original" else LOCAL_DIR_DEFAULT


def in_project_run() -> bool:
    """Under `mlflow run` (a run handed in $MLFLOW_RUN_ID, kept or released) with no $MLPROJECT_LOCAL_DIR: the working
    directory is the project, which stays clean, so a local file no one asked for is not written."""
    from mlproject.protocol import was_handed_a_run

    return was_handed_a_run() and not _local_dir_env()


def local_field() -> str:
    """What a user changes to move the local files, for an error line (`field=path: ...`): the
    variable, and where the files go while it is unset."""
    return LOCAL_DIR_ENV if _local_dir_env() else f"{LOCAL_DIR_ENV} (unset: under the working directory)"


def local_folder(given: str | None, field: str, default: str, profile: str = "default") -> tuple[Path, str]:
    """Folder `given` (option `field`), else `default` under the local root; with what a user
    changes to move it, for an error line."""
    return (Path(given).expanduser(), field) if given else (local_root(profile) / default, local_field())


def path_component(name: str) -> str:
    """A run or experiment name as one path component (MLflow allows `/` in names)."""
    cleaned = name.replace("/", "_").replace("\\", "_").strip()
    return cleaned if cleaned not in ("", ".", "..") else "unnamed"


def _nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (`Path.exists` is False below a regular file)."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _short(text: str, keep: int = 60) -> str:
    """`text` cut for an error line (a too-long name would fill the screen)."""
    return text if len(text) <= keep else f"{text[:keep]}...({len(text)} characters)"


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, the file system holding `folder` allows (255 when unknown)."""
    try:
        return os.pathconf(_nearest_existing(folder), "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_writable(path: str | os.PathLike[str], field: str) -> None:
    """Raise a one-line error unless folder `path` exists or can be created there, and can be written.

    Called before the work that writes there, so a path under a regular file, with a name too long
    or in a read-only place is refused while nothing exists yet, not found after an hour of training."""
    path = Path(path).expanduser()
    limit = name_max(path)
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise MlprojectError(f"{field}={_short(str(path))!r}: the name {_short(part)!r} is {len(os.fsencode(part))} "
                                 f"bytes, longer than the {limit} a file name may have; give a shorter one")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise MlprojectError(f"{field}={str(path)!r}: {str(existing)!r} is a file, not a folder; "
                             "expected a folder path (nothing was changed)")
    if not os.access(existing, os.W_OK | os.X_OK) or not _can_create_in(existing):
        raise MlprojectError(f"{field}={str(path)!r}: {str(existing)!r} cannot be written by this user; "
                             "give a writable folder (nothing was changed)")


def _can_create_in(folder: Path) -> bool:
    """Whether a folder can really be made in `folder`: for root, `os.access` answers yes for every
    path, /proc and read-only mounts included. The probe is removed at once."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mlproject-probe-", dir=folder))
    except OSError:
        return False
    return True


def check_replaceable(path: str | os.PathLike[str], kind: str) -> None:
    """Raise a one-line error unless `path` is absent, an empty folder, or an earlier `kind` output
    holding only what the suite wrote there."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise MlprojectError(f"output={str(path)!r} exists and is not a folder; expected a new or empty folder")
    check_writable(path, "output")
    if not path.exists():
        return
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return
    marker = _marker(path)
    if marker is None or marker.get("kind") != kind:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise MlprojectError(f"output={str(path)!r} is not empty ({shown}) and is not an earlier {kind} output; "
                             "give a new or empty folder (nothing was changed)")
    foreign = sorted(set(entries) - set(marker["entries"]) - {MARKER})
    if foreign:
        raise MlprojectError(f"output={str(path)!r} is an earlier {kind} output but also holds "
                             f"{', '.join(foreign[:5])}, which {kind} did not write; move them away or give "
                             "another folder (nothing was changed)")


@contextlib.contextmanager
def output_folder(path: str | os.PathLike[str], kind: str, details: dict | None = None) -> Iterator[Path]:
    """Yield a new empty folder beside `path` to fill; when the block succeeds it becomes `path`
    (see the module doc for when an existing `path` is replaced). On error nothing at `path` changes.
    `details` go into the marker beside its own keys (an export records what it wrote)."""
    path = Path(path).expanduser()
    check_replaceable(path, kind)  # before the caller's work: a refusal costs nothing
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.mkdir()
    try:
        yield tmp
        entries = sorted(p.name for p in tmp.iterdir())
        (tmp / MARKER).write_text(json.dumps({**(details or {}), "written_by": "mlproject", "kind": kind,
                                              "entries": entries}),
                                  encoding="utf-8")
        plain_modes(tmp)  # safetensors writes 0o600: the export's files all get the same modes
        _swap_in(tmp, path, kind)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(new: Path, path: Path, kind: str) -> None:
    """Rename `new` to `path`; an earlier output there is moved aside first, removed after."""
    check_replaceable(path, kind)  # again: the user may have added files while the output was written
    if not path.exists() or not any(path.iterdir()):
        os.replace(new, path)  # POSIX renames a folder over an empty one
        return
    aside = temp_path(path.with_name(path.name + ".old"))
    os.rename(path, aside)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(aside, path)  # put the earlier output back
        raise
    shutil.rmtree(aside, ignore_errors=True)  # only what the marker showed the suite wrote


@contextlib.contextmanager
def kept_or_temporary(folder: str | os.PathLike[str] | None, prefix: str) -> Iterator[Path]:
    """Yield `folder` when the user named one (it stays), else a new temporary folder outside the
    working directory, removed when the block ends: files written there only on their way to the
    tracking store (a sweep's results) leave nothing behind."""
    if folder:
        yield Path(folder).expanduser()
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)
