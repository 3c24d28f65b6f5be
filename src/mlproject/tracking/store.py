"""First use of the tracking store: a new SQLite file created once, a server that answers.

SQLite is the default store (`sqlite:///mlflow.db`). MLflow creates its schema the first time
a process opens a new file, through ~100 alembic migrations that are not atomic: several
processes doing that at once (a parallel sweep, a few `mlproject train` started together)
race in them (`table _alembic_tmp_params already exists`) and can leave the file
half-migrated, which breaks every later run on it. `ensure_store` takes an exclusive
`flock` on the database file, checks what is there and, on a new file, lets MLflow create
the schema while the others wait; a half-migrated file is a one-line error saying how to
recover. SQLite's own locks are POSIX record locks, which do not interact with `flock`.

A tracking server that is down at start would otherwise cost MLflow's retries (minutes) and
end in five chained tracebacks; `ensure_store` asks its `/health` first and says which URI
does not answer.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow

from mlproject.errors import MlprojectError
from mlproject.protocol import process_run_id
from mlproject.secrets import scrub

PROBE_ATTEMPTS = 3  # ~3 s in all: a server that is just starting gets a moment

_READY: set[str] = set()  # stores this process has checked (the check costs one open)


def study_storage(explicit: str | None) -> str:
    """An Optuna study's storage URL (`mlproject tune`): `explicit`, else a SQLite file beside a
    SQLite tracking store (`sqlite:///DIR/mlflow.db` -> `sqlite:///DIR/mlflow-optuna.db`).

    The study cannot share MLflow's own database: both migrate their schema with alembic and
    both name its version table `alembic_version`, so each would take the other's schema version
    for its own. With a tracking server, pass a database on the same database server (`--storage
    postgresql://.../optuna`) so every worker (process, container, mapped task) reaches it.
    """
    from mlproject.tracking.queries import absolute_tracking_uri

    if explicit:
        return explicit
    uri = absolute_tracking_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        stem, _ = os.path.splitext(uri[len(prefix):])
        return f"{prefix}{stem}-optuna.db"
    raise MlprojectError(f"tune: no study storage for tracking URI {uri.split('@')[-1]!r}; pass --storage with a "
                         "SQLAlchemy URL every worker can reach (e.g. postgresql://HOST/optuna beside the "
                         "tracking server's database)")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI (None for other stores and in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _schema_problem(path: Path) -> str | None:
    """Why the file at `path` is not a usable MLflow store, or None (also None for a new, empty file)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            version = None
            if "alembic_version" in tables:
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
                version = row[0] if row else None
    except sqlite3.DatabaseError as exc:
        return f"is not a SQLite database ({exc})"
    if not tables:
        return None
    leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
    if leftovers:
        return f"was left half-migrated by an interrupted schema migration (table {leftovers[0]})"
    if "experiments" in tables and version is None:
        return "has MLflow tables but no schema version (its creation was interrupted)"
    return None


def ensure_store(uri: str | None = None) -> None:
    """Create a new SQLite store's schema once, under a file lock; refuse a half-migrated one.

    A no-op for non-SQLite stores and for a store this process has already checked.
    """
    uri = uri or mlflow.get_tracking_uri()
    if uri in _READY:
        return
    if uri.startswith(("http://", "https://")):
        # A process given its run (MLFLOW_RUN_ID: by `mlflow run` or a sweep parent) talked to a live
        # server a moment ago; if that server is restarting, MLflow's own retries ride it out.
        if process_run_id() is None:
            check_server(uri)
        _READY.add(uri)
        return
    path = sqlite_path(uri)
    if path is None:
        if _is_file_store(uri):
            _open_file_store(uri)
        return
    if not path.parent.is_dir():
        raise MlprojectError(f"tracking store {uri}: folder {path.parent} does not exist")
    with open(path, "a+b") as lock:  # creates the file: an empty file is a valid, empty SQLite db
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            problem = _schema_problem(path)
            if problem is not None:
                raise MlprojectError(
                    f"tracking store {uri} {problem}; it cannot be repaired in place: move {path} aside "
                    "(delete it if it holds no runs yet) and run again, or point MLFLOW_TRACKING_URI at another store")
            # Opening the store runs MLflow's migrations on a new file; others wait on the lock.
            mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _READY.add(uri)


def _is_file_store(uri: str) -> bool:
    """A plain path or file: URI, which MLflow reads as its file store (a typo in a URI lands here too)."""
    from urllib.parse import urlparse

    try:
        scheme = urlparse(uri).scheme
    except ValueError:
        return True
    return scheme in ("", "file") or len(scheme) == 1  # one letter: a Windows drive


def _open_file_store(uri: str) -> None:
    """Open the file store at `uri` now: MLflow's refusals (a file store in maintenance mode, a path it
    cannot use) become one line naming the URI instead of an exception at the first call."""
    try:
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - MLflow raises several kinds for an unusable path
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MlprojectError(f"tracking store {uri!r} cannot be used: {first[:240]}; expected a database URI "
                             "such as sqlite:///mlflow.db or a server's http:// URL") from None
    _READY.add(uri)


def check_server(uri: str) -> None:
    """Raise a one-line MlprojectError unless the tracking server at `uri` answers `/health`."""
    reason = ""
    for attempt in range(PROBE_ATTEMPTS):
        try:
            with urllib.request.urlopen(_health_request(uri), timeout=5) as resp:
                if resp.status == 200:
                    return
                reason = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):  # an authenticating proxy answers: the server is up
                return
            reason = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            reason = str(getattr(exc, "reason", exc))
        if attempt < PROBE_ATTEMPTS - 1:
            time.sleep(1.0 + attempt)
    raise MlprojectError(f"the tracking server at {scrub(uri)} is not reachable ({scrub(reason)}): "
                         "is it running? start one with `mlproject server` or set MLFLOW_TRACKING_URI")


def _health_request(uri: str) -> urllib.request.Request:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    request = urllib.request.Request(urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", "")))
    if parts.username is not None:  # the credentials go in a header, never in a printed URL
        import base64

        token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    return request


def connection_failure(exc: BaseException) -> str | None:
    """A one-line description when `exc` comes from the tracking server not answering, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        module = type(current).__module__
        if module.startswith(("requests", "urllib3")) and name in {"ConnectionError", "MaxRetryError",
                                                                   "NewConnectionError", "ConnectTimeout",
                                                                   "ReadTimeout", "Timeout"}:
            return (f"the tracking server at {scrub(mlflow.get_tracking_uri())} stopped answering "
                    f"({name}); is it running? A resumable run continues with --resume-from RUN_ID")
        current = current.__cause__ or current.__context__
    return None
