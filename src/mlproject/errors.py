"""The one error type users see: a one-line message, printed by the CLI without a traceback."""


class MlprojectError(Exception):
    """Bad input or an unusable environment, described in one line for the user."""


class ConfigError(MlprojectError, ValueError):
    """A config value (from YAML, a flag or code) that is unknown, mistyped or impossible."""
