"""The best child of a sweep as a servable model: logged on that child, registered on request.

Sweep children usually keep only their checkpoints (`log_model: false`, a LoggedModel per
child costs time and space for models nobody serves). After the sweep, the best child's best
checkpoint becomes a pyfunc text-generation LoggedModel of that child run (tracking/textgen.py),
and with `register_best: NAME` a version of registered model NAME with the alias `best`:

    mlflow.pyfunc.load_model("models:/NAME@best").predict(["The module"])
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlproject.schema import Tag
from mlproject.tracking.artifacts import download_checkpoint, download_tokenizer, log_model
from mlproject.tracking.client import set_tags

BEST_ALIAS = "best"


def predict_command(model_uri: str) -> str:
    """A shell line that loads the model with MLflow alone and generates from one prompt."""
    return (f"python -c \"import mlflow; print(mlflow.pyfunc.load_model('{model_uri}')"
            f".predict(['The module'], params={{'max_new_tokens': 20}}))\"")


@dataclass
class BestModel:
    run_id: str                       # the child run the model belongs to
    model_uri: str                    # models:/m-... (the LoggedModel)
    registered_uri: str | None = None  # models:/NAME/VERSION
    alias_uri: str | None = None       # models:/NAME@best


def child_model_uri(run_id: str) -> str | None:
    """The pyfunc LoggedModel a child already has (train with log_model), if any."""
    client = MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    models = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                         max_results=1)
    return f"models:/{models[0].model_id}" if models else None


def log_child_model(run_id: str) -> str:
    """Log the child's best (else last) checkpoint as a LoggedModel of that run; its models:/ URI.

    The run is FINISHED: it is reopened for the upload, then closed again with its own end time,
    so its duration in the UI stays the training time.
    """
    from mlproject.model.checkpoint import load_model_checkpoint

    client = MlflowClient()
    info = client.get_run(run_id).info
    with tempfile.TemporaryDirectory(prefix="mlproject-best-") as tmp:
        checkpoint = download_checkpoint(run_id, tmp, kinds=("best", "last"))
        tokenizer = download_tokenizer(run_id, tmp)
        model, state = load_model_checkpoint(checkpoint, "cpu")
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None, log_system_metrics=False):
            uri = log_model(model, tokenizer_path=tokenizer, register_as=None, step=int(state.get("step", 0)),
                            params={"checkpoint": Path(checkpoint).name, "checkpoint_step": state.get("step")})
    client.set_terminated(run_id, info.status, end_time=info.end_time)
    return uri


def _current_best(name: str, model_uri: str):  # -> ModelVersion | None
    """The version the `best` alias points at, if it is already `model_uri`."""
    try:
        version = MlflowClient().get_model_version_by_alias(name, BEST_ALIAS)
    except MlflowException:  # no such model or alias yet
        return None
    same = version.source == model_uri or getattr(version, "model_id", None) == model_uri.rsplit("/", 1)[-1]
    return version if same else None


def publish_best(parent_run_id: str, run_id: str, register_as: str | None, *, metric: str,
                 value: float, version_tags: Mapping[str, str] | None = None) -> BestModel:
    """The best child's model (logged if it has none), registered as `register_as` with alias `best`;
    `version_tags` (the gate's evidence) go on the new version."""
    client = MlflowClient()
    best = BestModel(run_id=run_id, model_uri=child_model_uri(run_id) or log_child_model(run_id))
    tags = {Tag.BEST_RUN_ID: run_id, Tag.BEST_MODEL_URI: best.model_uri}
    if register_as:
        version = _current_best(register_as, best.model_uri)  # a resumed sweep registers nothing new
        if version is None:
            version = mlflow.register_model(best.model_uri, register_as,
                                            tags={"sweep_parent_run_id": parent_run_id, metric: f"{value:.6g}",
                                                  **(version_tags or {})})
            client.set_registered_model_alias(register_as, BEST_ALIAS, version.version)
        best.registered_uri = f"models:/{register_as}/{version.version}"
        best.alias_uri = f"models:/{register_as}@{BEST_ALIAS}"
        tags[Tag.REGISTERED_MODEL_URI] = best.registered_uri
    set_tags(parent_run_id, tags)
    return best
