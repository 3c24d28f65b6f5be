"""MlflowTracker: the application's `Tracker` for MLflow. One training step is one MLflow run.

Which run that is, `client.start_run` decides (a given child run, a new child of a parent, the
run the process was handed, the run being resumed, or a new run). While the trainer runs, an
`MlflowLogger` records params, metrics and checkpoints; at the end the best checkpoint becomes
a LoggedModel. The run ends FINISHED, KILLED (interrupted, resumable) or FAILED (error tag
set, what was logged before the error kept); a resume of a FINISHED run that fails before any
training keeps it FINISHED.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from mlproject.app.config import RunConfig, legacy_layout
from mlproject.app.train import TrainOutcome, run_training
from mlproject.config import dump_yaml, flatten
from mlproject.errors import MlprojectError
from mlproject.schema import Artifact, RunRole, RunStatus, SweepKind, Tag
from mlproject.tracking import client
from mlproject.tracking.artifacts import download_checkpoint, log_file_as, log_model
from mlproject.tracking.logger import MlflowLogger
from mlproject.tracking.lease import Lease
from mlproject.tracking.queries import experiment_name, get_run
from mlproject.tracking.record import record_run
from mlproject.tracking.run_context import configure_system_metrics, environment_tags, git_info
from mlproject.tracking.store import ensure_store
from mlproject.training.trainer import TrainResult

LOG_INPUT_ATTEMPTS = 3
# data.info entries recorded with the dataset input (all of data.info is also logged as `dataset.*` params)
DATASET_INPUT_TAGS = ("train_tokens", "val_tokens", "train_docs", "val_docs", "vocab_size", "tokenizer_hash")


def log_dataset(info: Mapping[str, Any]) -> None:
    """`mlflow.log_input`: the corpus's name, source and digest, its token counts as input tags.

    A MetaDataset records where the data came from without uploading it; Hub corpora get a
    Hugging Face source (their repository id), local and offline ones a source tag.
    """
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    source = str(info["source"])
    origin = HuggingFaceDatasetSource(path=source) if "/" in source else CodeDatasetSource({"source": source})
    dataset = MetaDataset(origin, name=str(info["dataset"]), digest=str(info["digest"]))
    counts = {k: str(info[k]) for k in DATASET_INPUT_TAGS if k in info}
    # The children of a parallel sweep log the same corpus at the same moment, and the store's
    # check-then-insert of the dataset row races (UNIQUE experiment, name, digest): the loser
    # gets an integrity error. Its retry finds the row and only links it to the run.
    for attempt in range(LOG_INPUT_ATTEMPTS):
        try:
            mlflow.log_input(dataset, context="training", tags=counts)
            return
        except MlflowException:
            if attempt == LOG_INPUT_ATTEMPTS - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


@dataclass
class MlflowRun:
    """One training run in MLflow (the application's `TrackedRun`)."""

    run: client.ActiveRun
    cfg: RunConfig
    data: Any
    run_name: str
    is_child: bool
    logger: MlflowLogger
    status: str = RunStatus.FAILED
    checkpoint_uris: dict[str, str] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def experiment_id(self) -> str:
        return self.run.experiment_id

    @property
    def callbacks(self) -> list[Any]:
        return [self.logger]

    def resume_checkpoint(self, run_id: str, checkpoint_dir: Path) -> Path:
        """The run's last.pt (to resume from) and, if the folder lacks it, its best.pt (the best so far)."""
        last = download_checkpoint(run_id, checkpoint_dir.parent / "resume")
        if not (checkpoint_dir / "best.pt").is_file():
            try:
                best = download_checkpoint(run_id, checkpoint_dir.parent / "resume", kinds=("best",))
            except MlprojectError:  # no evaluation improved before the run stopped
                return last
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            best.replace(checkpoint_dir / "best.pt")
        return last

    def finish(self, result: TrainResult, outcome: TrainOutcome) -> None:
        self.checkpoint_uris = outcome.checkpoint_uris = self.logger.finish()
        self.status = outcome.status
        client.set_tags(self.run_id, {Tag.TRAIN_STATUS: result.status})
        if self.logger.changed_params:
            _note_changed_params(self.run_id, self.logger.changed_params)
        model_checkpoint = result.best_checkpoint or result.last_checkpoint
        if outcome.status == RunStatus.FINISHED and self.cfg.tracking.log_model and model_checkpoint is not None:
            outcome.model_uri = _log_best_model(model_checkpoint, self.data.tokenizer_path, self.cfg, result.step)
        client.end_run(outcome.status)

    def fail(self, exc: BaseException) -> None:
        """End the run after `exc`: KILLED or FAILED, or FINISHED again if nothing was trained."""
        if self.run.previous_status == RunStatus.FINISHED and not self.logger.started:
            client.restore_finished(self.run)
            self.status = RunStatus.FINISHED
            return
        self.status = RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED
        try:
            self.checkpoint_uris = self.logger.finish()
        except Exception:  # the run's own error is the one to report
            pass
        client.end_run(self.status, error=exc)


class MlflowTracker:
    """Records training runs in MLflow. `run_id`: join this (sweep child) run; `parent_run_id`:
    create a child of it; `extra_tags`: set on the run."""

    def __init__(self, *, run_id: str | None = None, parent_run_id: str | None = None,
                 extra_tags: Mapping[str, str] | None = None) -> None:
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.extra_tags = dict(extra_tags or {})

    @property
    def joins_planned(self) -> bool:
        return self.run_id is not None or self.parent_run_id is not None

    def check(self) -> None:
        ensure_store()  # opens (and on a new SQLite file migrates) the store, or says why it cannot

    def location(self) -> str:
        return client.tracking_uri()

    @contextlib.contextmanager
    def run(self, cfg: RunConfig, data: Any, *, resume_run_id: str | None) -> Iterator[MlflowRun]:
        tags = {"model_version": cfg.model.model_version, "dataset": cfg.data.dataset,
                Tag.PROFILE: cfg.tracking.profile,
                **git_info(), **environment_tags(), **self.extra_tags}
        join = client.join_target(run_id=self.run_id, parent_run_id=self.parent_run_id, resume_run_id=resume_run_id)
        if self.run_id is None and resume_run_id:
            check_standalone_resume(resume_run_id)
        if join:
            client.check_run(join)
        # An existing run is leased before anything about it changes: a refusal leaves it as it was.
        held = _lease(join, cfg, contested=True) if join else None
        try:
            active = client.start_run(experiment_name=cfg.experiment_name, run_name=cfg.tracking.run_name,
                                      run_id=self.run_id, parent_run_id=self.parent_run_id,
                                      resume_run_id=resume_run_id, tags=tags,
                                      log_system_metrics=configure_system_metrics(cfg.tracking))
            if held is None:  # a new run: no other process knows its id yet
                held = _lease(active.run_id, cfg, contested=False)
        except BaseException:
            if held is not None:
                held.release()
            raise
        with held:
            yield from self._record(cfg, data, active)

    def _record(self, cfg: RunConfig, data: Any, active: client.ActiveRun) -> Iterator[MlflowRun]:
        recorded = get_run(active.run_id)
        record_run(active.run_id, recorded.tags, data.info)  # what a reproduction needs: source, environment, data
        sections = cfg.sections()
        sections["tracking"]["experiment_name"] = experiment_name(active.experiment_id)  # where it really went

        def on_start(info: dict[str, Any]) -> None:  # training of this session begins
            client.log_text(active.run_id, dump_yaml(sections), Artifact.RESOLVED_CONFIG)
            log_dataset(data.info)

        # params keep the names of earlier releases (`legacy_layout`: train.device, train.warmup)
        params = {**flatten(legacy_layout(sections)), **flatten(data.info, "dataset")}
        mlflow_run = MlflowRun(active, cfg, data, recorded.run_name, Tag.PARENT in recorded.tags,
                               MlflowLogger(active.run_id, params, on_start=on_start))
        try:
            log_file_as(client.client(), active.run_id, data.tokenizer_path, Artifact.TOKENIZER)
            yield mlflow_run
        except BaseException as exc:
            mlflow_run.fail(exc)
            raise


def _lease(run_id: str, cfg: RunConfig, *, contested: bool) -> Lease:
    return Lease(run_id, heartbeat_sec=cfg.tracking.lease_heartbeat,
                 timeout_sec=cfg.tracking.lease_timeout).acquire(contested=contested)


def check_standalone_resume(run_id: str) -> None:
    """Refuse `--resume-from` a sweep's parent or child: the sweep owns their state.

    A standalone train would join the run with the command line's config, turn a planned
    parent FAILED or train a child another process planned; the sweep's own commands do it.
    """
    tags = client.check_run(run_id, "resume_from run").data.tags
    role = tags.get(Tag.ROLE)
    command = {SweepKind.ABLATION: "ablate", SweepKind.LADDER: "ladder"}.get(tags.get(Tag.SWEEP_KIND), "compare")
    if role == RunRole.SWEEP_PARENT:
        raise MlprojectError(f"resume_from={run_id} is the parent run of a {command} sweep; resume the sweep with "
                             f"`mlproject {command} --resume` and the sweep's config, not with train --resume-from")
    if role == RunRole.SWEEP_CHILD:
        raise MlprojectError(f"resume_from={run_id} is a child run of a {command} sweep; train it with its planned "
                             f"config by `mlproject train --child-run-id {run_id}`, or resume the whole sweep with "
                             f"`mlproject {command} --resume`")


def _note_changed_params(run_id: str, changed: dict[str, tuple[str, str]]) -> None:
    """Params are immutable: a resumed run keeps its first values; the new ones go to a tag."""
    print("note: these settings differ from the run's logged params (which are kept): "
          + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in sorted(changed.items())), file=sys.stderr)
    client.set_tags(run_id, {Tag.CHANGED_PARAMS: json.dumps({k: new for k, (_, new) in sorted(changed.items())})})


def _log_best_model(checkpoint: Path, tokenizer_path: str | Path, cfg: RunConfig, step: int) -> str:
    """The best checkpoint as a LoggedModel (registered under `tracking.register_as` if set)."""
    from mlproject.model.checkpoint import load_model_checkpoint

    model, state = load_model_checkpoint(checkpoint, "cpu")
    return log_model(model, tokenizer_path=tokenizer_path, register_as=cfg.tracking.register_as, step=step,
                     params={"checkpoint_step": state.get("step", step)})


def train_tracked(cfg: RunConfig, *, run_id: str | None = None, parent_run_id: str | None = None,
                  extra_tags: Mapping[str, str] | None = None, callbacks: Sequence[Any] = ()) -> TrainOutcome:
    """`run_training` recorded in MLflow (untracked when `tracking.log_to_mlflow` is false)."""
    tracker = (MlflowTracker(run_id=run_id, parent_run_id=parent_run_id, extra_tags=extra_tags)
               if cfg.tracking.log_to_mlflow else None)
    return run_training(cfg, tracker, callbacks=callbacks)
