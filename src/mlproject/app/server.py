"""`mlproject server`: an MLflow tracking server with a SQL backend and proxied artifacts.

    mlproject server                                   # sqlite:///mlflow.db, 127.0.0.1:5000
    mlproject server --backend-store-uri postgresql://mlflow@db/mlflow --host 0.0.0.0 \
        --allowed-hosts mlflow --artifacts-destination /mlartifacts
    MLFLOW_AUTH_ADMIN_PASSWORD=... mlproject server --auth     # users must log in

Clients (the steps, in containers or not) log artifacts through the server
(`mlflow-artifacts:/...` URIs, `--artifacts-destination`), so they need no access to the
artifact store itself. It binds to loopback unless told otherwise; `--auth` runs MLflow's
basic-auth app (users and permissions in the same database unless `--auth-database-uri` says
otherwise, the admin password from MLFLOW_AUTH_ADMIN_PASSWORD), and clients then log with
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD. `postgresql://` URIs use psycopg 3 (SQLAlchemy 2.1's default
driver for that scheme; the `airflow` extra installs psycopg[binary]).

The backend URI may hold a database password, so it reaches `mlflow server` through its
environment (MLFLOW_BACKEND_STORE_URI), never the command line (visible in `ps`), and
everything printed shows it with the user and password masked.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from mlproject.errors import ConfigError, MlprojectError, require_extra
from mlproject.app.config import ServerConfig
from mlproject.secrets import scrub

_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
ADMIN_PASSWORD_VARIABLE = "MLFLOW_AUTH_ADMIN_PASSWORD"  # MLflow's own name for it
_LOOPBACK = ("localhost", "127.0.0.1")


def allowed_hosts(cfg: ServerConfig) -> list[str] | None:
    """The Host header patterns to pass as --allowed-hosts (None: MLflow's own default).

    MLflow's default accepts localhost and private IPs only; a given list replaces that
    default, so loopback is kept in it and every name also matches with any port.
    """
    if not cfg.allowed_hosts:
        return None
    out: list[str] = []
    for host in (*_LOOPBACK, *cfg.allowed_hosts):
        for pattern in (host,) if (":" in host or host == "*") else (host, f"{host}:*"):
            if pattern not in out:
                out.append(pattern)
    return out


def server_command(cfg: ServerConfig) -> list[str]:
    """The `mlflow server` command line for `cfg` (without the backend URI: see the module doc)."""
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--host", cfg.host, "--port", str(cfg.port),
           "--artifacts-destination", cfg.artifacts_destination,
           "--workers", str(cfg.workers)]
    hosts = allowed_hosts(cfg)
    if hosts:
        cmd += ["--allowed-hosts", ",".join(hosts)]
    if cfg.auth:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def auth_database_uri(cfg: ServerConfig) -> str:
    """Where the basic-auth app keeps users and permissions: the backend store's database unless
    told otherwise (its tables and migration history are its own, `alembic_version_auth`)."""
    return cfg.auth_database_uri or cfg.backend_store_uri


def write_auth_config(cfg: ServerConfig, folder: Path) -> Path:
    """The basic-auth app's settings file, readable by this user only (the database URI may hold a
    password). The admin password is not in it: MLflow reads it from MLFLOW_AUTH_ADMIN_PASSWORD
    when it creates the admin user on first start."""
    def value(text: str) -> str:
        return text.replace("%", "%%")  # MLflow reads the file with configparser's % interpolation

    path = folder / "basic_auth.ini"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = {value(auth_database_uri(cfg))}\n"
                "admin_username = admin\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return path


# Run as `python -c _GUARD PARENT_PID CMD...`: arms a parent-death signal, then becomes CMD (the
# signal survives exec). If `mlproject server` dies, even by SIGKILL, the kernel sends `mlflow
# server` SIGTERM, and MLflow passes that on to its web server, workers and job runner. The
# parent check closes the race of a parent that died before the signal was armed.
_GUARD = ("import ctypes, os, signal, sys\n"
          "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
          "if os.getppid() != int(sys.argv[1]):\n"
          "    sys.exit(0)\n"
          "os.execv(sys.argv[2], sys.argv[2:])\n")


def owned_by_this_process(cmd: list[str]) -> list[str]:
    """`cmd`, started so that it ends when this process ends, however it ends (Linux; elsewhere
    `cmd` as is: the SIGTERM and Ctrl-C paths still stop it)."""
    if not sys.platform.startswith("linux"):
        return cmd
    return [sys.executable, "-c", _GUARD, str(os.getpid()), *cmd]


def server_environment(cfg: ServerConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the server process: `base` (default os.environ) plus the backend URI."""
    env = dict(os.environ if base is None else base)
    env["MLFLOW_BACKEND_STORE_URI"] = cfg.backend_store_uri
    # SQLAlchemy's default pool (5 + 10 overflow) is too small for a team's writers: eight
    # concurrent trainings logging every step through one worker waited out its 30 s timeout
    # ("QueuePool limit ... reached") and lost a batch. 10 + 30 per worker keeps 2 workers
    # under PostgreSQL's default max_connections (100); a value already set is kept.
    env.setdefault("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "10")
    env.setdefault("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "30")
    if cfg.auth:
        # The session key every worker must share; one per server start unless the user set one.
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
    return env


def _check_sql_uri(name: str, uri: str) -> None:
    if urlsplit(uri).scheme.split("+")[0] not in _SQL_SCHEMES:
        raise ConfigError(f"server: {name}={scrub(uri)!r} is not a SQL database URI; "
                          "expected sqlite:///PATH or postgresql://USER@HOST/DB")


def validate_server_config(cfg: ServerConfig) -> None:
    """One-line errors for settings `mlflow server` would reject late or obscurely."""
    _check_sql_uri("backend_store_uri", cfg.backend_store_uri)
    if not 0 < cfg.port < 65536:
        raise ConfigError(f"server: port={cfg.port} is out of range; expected 1-65535")
    if cfg.workers < 1:
        raise ConfigError(f"server: workers={cfg.workers} must be >= 1")
    if cfg.auth_database_uri and not cfg.auth:
        raise ConfigError("server: auth_database_uri is set but auth is off; add --auth")
    if cfg.auth:
        require_extra("flask_wtf", "auth", "server --auth")  # MLflow's basic-auth app imports it
        if not os.environ.get(ADMIN_PASSWORD_VARIABLE):
            raise ConfigError(f"server: --auth needs the admin password in {ADMIN_PASSWORD_VARIABLE} "
                              "(MLflow ships none, and a default would be a published password)")
        _check_sql_uri("auth_database_uri", auth_database_uri(cfg))


def check_bindable(host: str, port: int) -> None:
    """Refuse now, in one line, an address the server could not listen on (port in use, an
    address of no interface here, an unknown name): `mlflow server` logs the errno and exits 0."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise MlprojectError(f"server: cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            raise MlprojectError(f"server: cannot listen on {host}:{port}: {exc.strerror or exc} "
                                 "(is another server running there? choose another --port or --host)") from None


def health_url(cfg: ServerConfig) -> str:
    """Where this machine reaches the server's /health: a wildcard bind answers on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(cfg.host, cfg.host)
    return f"http://[{host}]:{cfg.port}/health" if ":" in host else f"http://{host}:{cfg.port}/health"


def _healthy(url: str) -> bool:
    """True once the web server answers at all: an HTTP error status (a Host header outside
    --allowed-hosts) still means it is up and serving."""
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own server's address
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def training_view_url(cfg: ServerConfig) -> str:
    """The UI's experiment list in its model-training view. MLflow 3.17's UI opens in its GenAI view
    (traces, "evaluation runs") unless the URL or the browser's last choice says otherwise; the
    experiments' `mlflow.experimentKind` tag does not decide it there."""
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    return f"http://{host}:{cfg.port}/#/experiments?workflowType=machine_learning"


def wait_healthy(proc: subprocess.Popen, cfg: ServerConfig, is_stopped: Callable[[], bool]) -> None:
    """Return once the server answers /health; raise a one-line error when it exits first or does
    not answer within `startup_timeout` seconds (and stop it then)."""
    url, deadline = health_url(cfg), time.monotonic() + cfg.startup_timeout
    while not is_stopped():
        code = proc.poll()
        if code is not None:
            raise MlprojectError(f"server: mlflow server exited with code {code} before it answered {url}; "
                                 "its log above says why")
        if _healthy(url):
            print(f"mlproject server: healthy at {url}", flush=True)
            return
        if time.monotonic() > deadline:
            _signal_group(proc.pid, signal.SIGTERM)
            raise MlprojectError(f"server: no answer from {url} within startup_timeout={cfg.startup_timeout:g}s; "
                                 "stopped it (its log above says why)")
        time.sleep(0.5)


def run_server(cfg: ServerConfig) -> int:
    """Run `mlflow server` in the foreground until it exits or is stopped; returns its exit code.

    The address is checked before the server starts and its /health is awaited after: a server
    that cannot bind or never becomes healthy is an error (one line, non-zero exit), not the
    zero exit code `mlflow server` gives then.
    SIGTERM/SIGINT stop the whole server (exit code 0): `mlflow server` runs its web server
    as a child process and does not pass the signal on, so the server gets its own process
    group and the signal goes to the group. A SIGKILL leaves nothing behind either: see
    `owned_by_this_process`.
    """
    validate_server_config(cfg)
    check_bindable(cfg.host, cfg.port)
    if "://" not in cfg.artifacts_destination:
        os.makedirs(cfg.artifacts_destination, exist_ok=True)
    cmd = server_command(cfg)
    exposed = "" if cfg.host in _LOOPBACK else (" (exposed beyond loopback; users must log in)" if cfg.auth else
                                                " (exposed beyond loopback: the server has no authentication)")
    print(f"mlproject server: http://{cfg.host}:{cfg.port}{exposed}\n"
          f"  training runs: {training_view_url(cfg)}\n"
          f"  backend store: {scrub(cfg.backend_store_uri)}\n"
          f"  artifacts:     {cfg.artifacts_destination} (proxied)", flush=True)
    env = server_environment(cfg)
    settings = Path(tempfile.mkdtemp(prefix="mlproject-server-")) if cfg.auth else None  # 0700, removed on exit
    if settings is not None:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(write_auth_config(cfg, settings))
        print(f"  users:         {scrub(auth_database_uri(cfg))} (basic auth; admin user 'admin', password "
              f"from {ADMIN_PASSWORD_VARIABLE} on first start)", flush=True)
    proc = subprocess.Popen(owned_by_this_process(cmd), env=env, start_new_session=True)
    stopped = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopped
        stopped = True
        _signal_group(proc.pid, signal.SIGTERM)

    # An ignored signal stays ignored (a background job's SIGINT), as in the trainer.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)
                if signal.getsignal(sig) != signal.SIG_IGN}
    try:
        wait_healthy(proc, cfg, lambda: stopped)
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _signal_group(proc.pid, signal.SIGTERM)  # workers left behind by a server that exited
        if settings is not None:
            shutil.rmtree(settings, ignore_errors=True)
    return 0 if stopped else code


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
