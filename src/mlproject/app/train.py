"""`run_training`: one training step, recorded as exactly one MLflow run.

The pieces meet here: the run is started or joined (runs.py), data is prepared, the trainer
runs with an `MlflowLogger` callback (logger.py), checkpoints and the model are logged
(artifacts.py), and the run ends FINISHED, KILLED (interrupted, resumable) or FAILED (error
tag set, what was logged before the error kept, the error re-raised).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlproject.config import dump_yaml, flatten, to_dict
from mlproject.errors import MlprojectError
from mlproject.protocol import result_line
from mlproject.tracking.artifacts import (CHECKPOINT_DIR, CONFIG_ARTIFACT, TOKENIZER_ARTIFACT, download_checkpoint,
                                          log_file_as, log_model)
from mlproject.app.config import RunConfig
from mlproject.tracking.logger import MlflowLogger
from mlproject.tracking.run_context import configure_system_metrics
from mlproject.app.signals import sigterm_as_interrupt
from mlproject.tracking.client import (RUN_STATUS, TRAIN_STATUS_TAG, ActiveRun, end_run, is_run_id, restore_finished,
                                       set_tags, start_run, tracking_uri)
from mlproject.tracking.run_context import environment_tags, git_info
from mlproject.tracking.store import ensure_store
from mlproject.training.preflight import check_fits

LOG_INPUT_ATTEMPTS = 3
CHANGED_PARAMS_TAG = "mlproject.changed_params"  # {param: value of the latest session}
# data.info entries recorded with the dataset input (all of data.info is also logged as `dataset.*` params)
DATASET_INPUT_TAGS = ("train_tokens", "val_tokens", "train_docs", "val_docs", "vocab_size", "tokenizer_hash")


@dataclass
class TrainOutcome:
    """What a training step produced, as recorded in MLflow."""

    run_id: str
    experiment_id: str
    status: str  # MLflow run status: FINISHED | KILLED | FAILED
    summary: dict[str, float] = field(default_factory=dict)
    checkpoint_uris: dict[str, str] = field(default_factory=dict)  # {"last": "runs:/<id>/checkpoints/last.pt", ...}
    model_uri: str | None = None


def run_training(cfg: RunConfig, *, parent_run_id: str | None = None,
                 extra_tags: dict[str, str] | None = None, run_id: str | None = None,
                 callbacks: Sequence[Any] = ()) -> TrainOutcome:
    """Train one model as one MLflow run; see `runs.start_run` for which run that is.

    `cfg.tracking.resume_from` is a run id (continue that run from its `checkpoints/last.pt`)
    or a checkpoint path. Under torchrun every rank prepares data and trains; only rank 0
    talks to MLflow and shares the run id (for the checkpoint folder) and the resume
    checkpoint with the others. `callbacks` are extra trainer callbacks of a tracked run (the
    tune step's pruner).
    """
    from mlproject.training.device import select_device
    from mlproject.training.distributed import cleanup, init_distributed, rank_info

    dist = rank_info()
    created = False
    if dist.enabled:  # the group is needed before training starts, to share the run id
        dist, created = init_distributed(select_device(cfg.train.device).type == "cuda")
    try:
        if not dist.is_main:
            return _train_replica(cfg)
        if not cfg.tracking.log_to_mlflow:
            return _train_untracked(cfg)
        return _train_tracked(cfg, parent_run_id=parent_run_id, extra_tags=extra_tags, run_id=run_id,
                              callbacks=callbacks)
    finally:
        cleanup(created)


def _share(value: Any = None) -> Any:
    """Rank 0's `value` on every rank (itself in a single process). Also a barrier."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ----------------------------------------------------------------------------- helpers

def _resume_source(resume_from: str | None) -> tuple[str | None, Path | None]:
    """(run id, checkpoint path) named by `tracking.resume_from`, at most one of them set."""
    if not resume_from:
        return None, None
    path = Path(resume_from).expanduser()
    if path.is_file():
        return None, path
    if is_run_id(resume_from):
        return resume_from, None
    raise MlprojectError(f"resume_from={resume_from!r} is neither a checkpoint file nor an MLflow run id "
                         "(32 hex digits)")


def _resolved_sections(cfg: RunConfig, vocab_size: int, experiment: str) -> dict[str, Any]:
    """The run's resolved config (`RunConfig.resolved`): sections model/data/train/tracking."""
    return {
        "model": to_dict(cfg.model),
        "data": {**to_dict(cfg.data), "vocab_size": vocab_size},
        "train": to_dict(cfg.train),
        "tracking": {**to_dict(cfg.tracking), "experiment_name": experiment},
    }


def _log_dataset(info: dict[str, Any]) -> None:
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


def _summary_text(outcome: TrainOutcome, checkpoint_dir: Path | None) -> str:
    parts = [f"run {outcome.run_id or '(not tracked)'}: {outcome.status}"]
    for key in ("val_loss_best", "val_ppl_best", "val_bpb_best", "train_loss_last", "tokens_seen", "elapsed_sec"):
        if key in outcome.summary:
            parts.append(f"{key}={outcome.summary[key]:.4g}")
    lines = ["  ".join(parts)]
    if outcome.checkpoint_uris:
        lines.append("checkpoints: " + ", ".join(f"{k}={v}" for k, v in sorted(outcome.checkpoint_uris.items())))
    if checkpoint_dir is not None:
        lines.append(f"local checkpoints: {checkpoint_dir}")
    if outcome.model_uri:
        lines.append(f"model: {outcome.model_uri}")
    if outcome.run_id:
        lines.append(f"tracking: {tracking_uri()}")
    return "\n".join(lines)


def _report(outcome: TrainOutcome, checkpoint_dir: Path | None) -> None:
    print(_summary_text(outcome, checkpoint_dir), flush=True)
    print(result_line({"step": "train", "run_id": outcome.run_id or None, "status": outcome.status}), flush=True)


# ----------------------------------------------------------------------------- untracked

def _train_replica(cfg: RunConfig) -> TrainOutcome:
    """A rank other than 0 under torchrun: train with rank 0's run folder and resume checkpoint."""
    from mlproject.data.prepare import prepare_data
    from mlproject.training.trainer import train

    run_key, resume_path = _share()  # after rank 0 prepared the data: the caches exist now
    data = prepare_data(cfg.data)
    cfg = cfg.resolved(data.vocab_size)
    result = train(cfg.model, data, cfg.train, checkpoint_dir=Path(cfg.tracking.output_dir) / run_key / CHECKPOINT_DIR,
                   resume_from=resume_path)
    return TrainOutcome(run_key if cfg.tracking.log_to_mlflow else "", "", RUN_STATUS[result.status],
                        dict(result.summary))


def _train_untracked(cfg: RunConfig) -> TrainOutcome:
    """Train with no MLflow at all (log_to_mlflow=false): checkpoints under output_dir/<run name>."""
    import time

    from mlproject.data.prepare import prepare_data
    from mlproject.training.trainer import train

    resume_run_id, resume_path = _resume_source(cfg.tracking.resume_from)
    if resume_run_id is not None:
        raise MlprojectError("resume_from a run id needs tracking; give a checkpoint path with log_to_mlflow=false")
    name = cfg.tracking.run_name or f"untracked-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    checkpoint_dir = Path(cfg.tracking.output_dir) / name / CHECKPOINT_DIR
    data = prepare_data(cfg.data)
    cfg = cfg.resolved(data.vocab_size)
    _share((name, resume_path))
    result = train(cfg.model, data, cfg.train, checkpoint_dir=checkpoint_dir, resume_from=resume_path)
    uris = {k: str(p) for k, p in (("last", result.last_checkpoint), ("best", result.best_checkpoint)) if p}
    outcome = TrainOutcome("", "", RUN_STATUS[result.status], dict(result.summary), uris)
    _report(outcome, checkpoint_dir)
    return outcome


# ----------------------------------------------------------------------------- tracked

def _train_tracked(cfg: RunConfig, *, parent_run_id: str | None, extra_tags: dict[str, str] | None,
                   run_id: str | None, callbacks: Sequence[Any] = ()) -> TrainOutcome:
    from mlproject.data.prepare import prepare_data
    from mlproject.training.trainer import train

    resume_run_id, resume_path = _resume_source(cfg.tracking.resume_from)
    tags = {"model_version": cfg.model.model_version, "dataset": cfg.data.dataset,
            **git_info(), **environment_tags(), **(extra_tags or {})}
    experiment = cfg.experiment_name
    ensure_store()  # before the first client: it opens (and on a new SQLite file migrates) the store
    client = MlflowClient()
    checkpoint_dir: Path | None = None
    logger: MlflowLogger | None = None
    with sigterm_as_interrupt():
        # Everything that can fail on the config alone fails here, before a run exists.
        data = prepare_data(cfg.data)
        cfg = cfg.resolved(data.vocab_size)
        check_fits(cfg.model, cfg.train, data)
        run: ActiveRun = start_run(experiment_name=experiment, run_name=cfg.tracking.run_name, run_id=run_id,
                                   parent_run_id=parent_run_id, resume_run_id=resume_run_id, tags=tags,
                                   log_system_metrics=configure_system_metrics(cfg.tracking))
        outcome = TrainOutcome(run.run_id, run.experiment_id, "FAILED")
        try:
            checkpoint_dir = Path(cfg.tracking.output_dir) / run.run_id / CHECKPOINT_DIR
            if resume_run_id is not None:
                resume_path = _download_resume(resume_run_id, checkpoint_dir)
            _share((run.run_id, resume_path))
            log_file_as(client, run.run_id, data.tokenizer_path, TOKENIZER_ARTIFACT)

            def params_at_start(info: dict[str, Any]) -> dict[str, Any]:
                experiment_name = client.get_experiment(run.experiment_id).name
                sections = _resolved_sections(cfg, data.vocab_size, experiment_name)
                client.log_text(run.run_id, dump_yaml(sections), CONFIG_ARTIFACT)
                params = {k: v for name, section in sections.items() for k, v in flatten(section, name).items()}
                return {**params, **flatten(data.info, "dataset")}

            logger = MlflowLogger(client, run.run_id, params_at_start, on_start=lambda info: _log_dataset(data.info))
            result = train(cfg.model, data, cfg.train, checkpoint_dir=checkpoint_dir, callbacks=[logger, *callbacks],
                           resume_from=resume_path)
            outcome.checkpoint_uris = logger.finish()
            outcome.summary = dict(result.summary)
            outcome.status = RUN_STATUS[result.status]
            set_tags(run.run_id, {TRAIN_STATUS_TAG: result.status})
            if logger.changed_params:
                _note_changed_params(client, run.run_id, logger.changed_params)
            model_checkpoint = result.best_checkpoint or result.last_checkpoint
            if outcome.status == "FINISHED" and cfg.tracking.log_model and model_checkpoint is not None:
                outcome.model_uri = _log_best_model(model_checkpoint, data.tokenizer_path, cfg, result.step)
            end_run(outcome.status)
        except BaseException as exc:
            if run.previous_status == "FINISHED" and not (logger is not None and logger.started):
                # No new training started: the finished result stands, the error is only reported.
                restore_finished(run)
                print(f"note: run {run.run_id} stays FINISHED; nothing was trained", file=sys.stderr)
                raise
            outcome.status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            if logger is not None:
                try:
                    outcome.checkpoint_uris = logger.finish()
                except Exception:  # the run's own error is the one to report
                    pass
            end_run(outcome.status, error=exc)
            _report(outcome, checkpoint_dir)
            raise
    recorded = client.get_run(run.run_id)
    if "mlflow.parentRunId" not in recorded.data.tags:  # a standalone train (not a sweep child, in or out
        from mlproject.compat import export_checkpoints  # of process): the original's checkpoints/<name>.*

        export_checkpoints(cfg.tracking.run_name or recorded.info.run_name or run.run_id,
                           last=result.last_checkpoint, best=result.best_checkpoint, tokenizer=data.tokenizer_path)
    _report(outcome, checkpoint_dir)
    return outcome


def _note_changed_params(client: MlflowClient, run_id: str, changed: dict[str, tuple[str, str]]) -> None:
    """Params are immutable: a resumed run keeps its first values; the new ones go to a tag."""
    print("note: these settings differ from the run's logged params (which are kept): "
          + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in sorted(changed.items())), file=sys.stderr)
    set_tags(run_id, {CHANGED_PARAMS_TAG: json.dumps({k: new for k, (_, new) in sorted(changed.items())})})


def _download_resume(run_id: str, checkpoint_dir: Path) -> Path:
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


def _log_best_model(checkpoint: Path, tokenizer_path: str | Path, cfg: RunConfig, step: int) -> str:
    """The best checkpoint as a LoggedModel (registered under `tracking.register_as` if set)."""
    from mlproject.model.checkpoint import load_model_checkpoint

    model, state = load_model_checkpoint(checkpoint, "cpu")
    return log_model(model, tokenizer_path=tokenizer_path, register_as=cfg.tracking.register_as, step=step,
                     params={"checkpoint_step": state.get("step", step)})
