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
