"""Credentials never reach an artifact, a param or a tag: `scrub` removes them from text.

Two kinds of secret reach a process: the user-info part of a URI (`http://alice:pw@host`,
which MLflow itself prints in its "View run ... at" line) and the values of the environment
variables MLflow reads credentials from. Every log that becomes an artifact (a sweep child's
`logs/train.log`, a pipeline step's log) and every param and tag value goes through `scrub`.
No mlflow import here: the pipeline runner and the DAG use this without the tracking stack.
"""

from __future__ import annotations

import os
import re

# scheme://user:password@host -> scheme://***@host (also a bare token: scheme://token@host)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]+@")
SECRET_ENV_VARS = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_CLIENT_CERT_PATH",
                   "DATABRICKS_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_ACCESS_KEY",
                   "AZURE_STORAGE_CONNECTION_STRING")
_MIN_SECRET_LEN = 4  # shorter values ("1", "x") would blank out ordinary text; no real secret is that short


def secret_values() -> list[str]:
    """The credential values set in this process's environment, longest first."""
    values = {os.environ.get(name, "") for name in SECRET_ENV_VARS}
    return sorted((v for v in values if len(v) >= _MIN_SECRET_LEN), key=len, reverse=True)


def scrub(text: str) -> str:
    """`text` with URI user-info replaced by `***@` and credential env values by `***`."""
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    for value in secret_values():
        text = text.replace(value, "***")
    return text


def has_userinfo(uri: str | None) -> bool:
    return bool(uri) and bool(_USERINFO.match(uri))


def quiet_mlflow_run_links() -> None:
    """Stop MLflow printing run links ("View run ... at: URL") when the URL carries credentials.

    The line would put the password on the console and in every log copied from it; the
    step's own summary already prints the redacted tracking URI.
    """
    if has_userinfo(os.environ.get("MLFLOW_TRACKING_URI")):
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
