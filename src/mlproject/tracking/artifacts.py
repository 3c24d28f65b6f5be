"""Artifacts of a run: checkpoints, tokenizer, resolved config, and the best model as a LoggedModel.

Layout inside a run (the paths are `mlproject.schema.Artifact` members):

    CHECKPOINTS (last.pt, best.pt)   torch.save checkpoints written by the trainer
    TOKENIZER                        the run's BPE tokenizer
    RESOLVED_CONFIG                  sections model/data/train/tracking (RunConfig.load reads it)

plus a LoggedModel (`models:/m-...`): a pyfunc text-generation model with safetensors weights,
its config and the tokenizer (tracking/textgen.py), loaded without unpickling anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from mlproject.errors import MlprojectError
from mlproject.schema import Artifact, checkpoint_artifact


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No artifact progress bars inside the block (they flood logs that become artifacts)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    saved_env, pytorch_log = os.environ.get(key), logging.getLogger("mlflow.pyfunc")
    saved_level = pytorch_log.level
    os.environ[key] = "false"
    pytorch_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pytorch_log.setLevel(saved_level)
        if saved_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved_env


def checkpoint_uri(run_id: str, kind: str) -> str:
    return f"runs:/{run_id}/{checkpoint_artifact(kind)}"


def log_file_as(client: MlflowClient, run_id: str, local_path: str | Path, artifact_file: str) -> None:
    """Upload `local_path` to the run as `artifact_file` (its own name may differ)."""
    local_path = Path(local_path)
    folder, _, name = artifact_file.rpartition("/")
    if local_path.name == name:
        client.log_artifact(run_id, str(local_path), folder or None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / name
        try:
            staged.hardlink_to(local_path)
        except OSError:
            shutil.copyfile(local_path, staged)
        client.log_artifact(run_id, str(staged), folder or None)


def _pin(path: Path) -> Path:
    """A hard link (or copy) of `path` beside it, unaffected by the trainer replacing `path`."""
    pinned = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}.upload")
    try:
        os.link(path, pinned)
    except OSError:
        shutil.copyfile(path, pinned)
    return pinned


class CheckpointUploader:
    """Uploads checkpoints in a background thread so training never waits on the artifact store.

    At most one upload per kind waits in the queue: a checkpoint that arrives while an upload
    of its kind is still waiting replaces that upload's file, so the newest one goes up (the
    trainer replaces files atomically, so a reader never sees a half-written file).
    """

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlproject-upload")
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[Path, Callable[[], None] | None, bool]] = {}  # kind -> the waiting upload
        self._futures: list[Future[None]] = []
        self.uploaded: dict[str, str] = {}  # kind -> runs:/ URI

    def submit(self, path: Path, kind: str, before: Callable[[], None] | None = None) -> None:
        """Queue an upload of `path` as `kind`; `before` runs in the upload thread first.

        With `before`, the file is pinned now (a hard link): the upload sends exactly this
        checkpoint after `before` returned, never a newer file that `before` did not cover.
        """
        path, pinned = Path(path), before is not None
        if pinned:
            path = _pin(path)
        with self._lock:
            waiting = self._jobs.get(kind)
            self._jobs[kind] = (path, before, pinned)
        if waiting is not None:  # the waiting upload takes this newer job when it starts
            if waiting[2]:
                waiting[0].unlink(missing_ok=True)
            return
        self._futures.append(self._pool.submit(self._upload, kind))

    def _upload(self, kind: str) -> None:
        with self._lock:
            path, before, pinned = self._jobs.pop(kind)
        try:
            if before is not None:
                before()
            log_file_as(self.client, self.run_id, path, checkpoint_artifact(kind))
        finally:
            if pinned:
                path.unlink(missing_ok=True)
        self.uploaded[kind] = checkpoint_uri(self.run_id, kind)

    def flush(self) -> None:
        """Wait for every queued upload; raise the first upload error."""
        futures, self._futures = self._futures, []
        errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def download_checkpoint(run_id: str, dst_dir: str | Path, kinds: tuple[str, ...] = ("last",)) -> Path:
    """Download the first of `kinds` that the run has (e.g. ("best", "last")) into `dst_dir`."""
    client = MlflowClient()
    present = {Path(f.path).name for f in client.list_artifacts(run_id, Artifact.CHECKPOINTS)}
    for kind in kinds:
        if f"{kind}.pt" in present:
            Path(dst_dir).mkdir(parents=True, exist_ok=True)
            with quiet():
                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=checkpoint_artifact(kind),
                                                            dst_path=str(dst_dir))
            return Path(local)
    wanted = " or ".join(checkpoint_artifact(k) for k in kinds)
    raise MlprojectError(f"run {run_id} has no {wanted} artifact to load")


def download_artifact_uri(uri: str, dst_dir: str | Path) -> Path:
    """One artifact by URI (`runs:/<id>/checkpoints/last.pt`, `mlflow-artifacts:/...`), downloaded into `dst_dir`."""
    try:
        with quiet():
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst_dir)))
    except Exception as exc:  # MlflowException (no such run or artifact) or a malformed URI
        raise MlprojectError(f"cannot download {uri!r}: {str(exc).strip().splitlines()[0]}") from None


def download_tokenizer(run_id: str, dst_dir: str | Path) -> Path:
    """The run's tokenizer (`Artifact.TOKENIZER`), downloaded into `dst_dir`."""
    try:
        with quiet():
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=Artifact.TOKENIZER,
                                                        dst_path=str(dst_dir))
    except mlflow.exceptions.MlflowException:
        raise MlprojectError(f"run {run_id} has no {Artifact.TOKENIZER} artifact") from None
    return Path(local)


def log_model(model: Any, *, tokenizer_path: str | Path, register_as: str | None, step: int,
              params: dict[str, Any] | None = None) -> str:
    """Log `model` as a pyfunc text-generation LoggedModel of the active run; return its models:/ URI.

    A "models from code" pyfunc with safetensors weights (tracking/textgen.py): loading it
    never unpickles anything, whatever MLFLOW_ALLOW_PICKLE_DESERIALIZATION says (MLflow 3.17
    lets it default to true, so a pickled `mlflow.pytorch` model would run a tampered pickle).
    """
    from mlproject.tracking.textgen import log_text_model

    with quiet():
        return log_text_model(model, tokenizer_path=tokenizer_path, register_as=register_as, step=step,
                              params=params)


def load_logged_model(model_uri: str, dst_dir: str | Path, device: Any = "cpu") -> tuple[Any, Path]:
    """A LoggedModel or registered model version (`models:/NAME@alias` too): (GPT in eval mode,
    tokenizer.json path), read from its safetensors weights and JSON config; no code is run."""
    from mlproject.model.folder import load_folder

    try:
        with quiet():
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst_dir)))
    except mlflow.exceptions.MlflowException as exc:
        raise MlprojectError(f"cannot load model {model_uri!r}: {str(exc).splitlines()[0]}") from None
    if not (local / "artifacts").is_dir():
        raise MlprojectError(f"model {model_uri!r} has no artifacts/ folder; it was not logged by `mlproject`")
    return load_folder(local / "artifacts", device)
