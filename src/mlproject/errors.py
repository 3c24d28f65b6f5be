"""The one error type users see: a one-line message, printed by the CLI without a traceback."""

from __future__ import annotations

from typing import Any


class MlprojectError(Exception):
    """Bad input or an unusable environment, described in one line for the user."""


class ConfigError(MlprojectError, ValueError):
    """A config value (from YAML, a flag or code) that is unknown, mistyped or impossible."""


def require_extra(module: str, extra: str, feature: str) -> Any:
    """Import `module`, or fail with one line naming the optional extra that installs it.

    Optional dependencies are imported only where a command needs them; a missing one is an
    environment problem the user fixes with one pip command, not a traceback to read."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MlprojectError(f"{feature} needs the optional extra {extra!r}: "
                             f"pip install 'mlproject[{extra}]'") from None


# The optional extras of pyproject.toml by the top-level module each installs: a command that
# reaches one of these without its extra names the extra, wherever the import happens.
EXTRA_OF_MODULE = {"optuna": "tune", "lm_eval": "eval", "accelerate": "eval", "transformers": "dev",
                   "kubernetes": "kubernetes", "pynvml": "gpu", "airflow": "airflow",
                   "flask_wtf": "auth"}
_PROVIDERS = {"airflow.providers.cncf.kubernetes": "kubernetes", "airflow.providers.docker": "airflow"}


def missing_extra(exc: BaseException) -> str | None:
    """The one line for an import of an optional extra's module that failed (None for any other error)."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    extra = next((e for prefix, e in _PROVIDERS.items() if exc.name.startswith(prefix)),
                 EXTRA_OF_MODULE.get(exc.name.split(".")[0]))
    if extra is None:
        return None
    return f"{exc.name} is not installed; it comes with the optional extra {extra!r}: pip install 'mlproject[{extra}]'"
