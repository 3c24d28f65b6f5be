"""`run_training`: prepare -> resolve -> train, with an optional tracker.

One training step is one call. The data is prepared, the config resolved once (what the run
records is exactly what it trains: `RunConfig.resolved`) and checked against the data before
any run exists, then the trainer runs. A `Tracker` (for MLflow: `tracking.train_tracker`)
records it: it opens or joins the run, gives the trainer its callbacks and ends the run
FINISHED, KILLED (interrupted, resumable) or FAILED. Without one, checkpoints go to
`output_dir/<run name>` and nothing else is recorded.

A tracked run writes its checkpoints to a scratch folder in the cache (`<cache>/scratch/<run id>`)
and removes it once they are logged: the run's artifacts are the record, and the working directory
(the project, under `mlflow run .`) stays clean. A run that fails keeps it, and says where. A
`--output-dir` the user gives is kept; an untracked run's checkpoints go under the local root
(`app.local_copies`), since nothing else holds them.

Under torchrun every rank prepares data and trains; only rank 0 tracks, and it shares the run
key (the checkpoint folder) and the resume checkpoint with the other ranks.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlproject.app.config import RunConfig
from mlproject.app.signals import sigterm_as_interrupt
from mlproject.app.tracker import Tracker
from mlproject.errors import MlprojectError
from mlproject.outdir import SCRATCH, check_writable
from mlproject.protocol import is_run_id, result_line
from mlproject.schema import Artifact, RunStatus, TrainStatus


# Trainer status -> run status. An interrupted run (SIGTERM, Ctrl-C) wrote a final checkpoint
# and can be resumed, so it is KILLED, never FAILED.
RUN_STATUS = {TrainStatus.FINISHED: RunStatus.FINISHED, TrainStatus.EARLY_STOPPED: RunStatus.FINISHED,
              TrainStatus.INTERRUPTED: RunStatus.KILLED, TrainStatus.STOPPED: RunStatus.FINISHED}


@dataclass
class TrainOutcome:
    """What a training step produced."""

    run_id: str
    experiment_id: str
    status: str  # FINISHED | KILLED | FAILED
    summary: dict[str, float] = field(default_factory=dict)
    checkpoint_uris: dict[str, str] = field(default_factory=dict)  # {"last": "runs:/<id>/checkpoints/last.pt", ...}
    model_uri: str | None = None


def run_training(cfg: RunConfig, tracker: Tracker | None = None, *, callbacks: Sequence[Any] = ()) -> TrainOutcome:
    """Train one model; record it with `tracker` (None: untracked). `callbacks` are extra
    trainer callbacks (the tune step's pruner)."""
    from mlproject.training.device import select_device
    from mlproject.training.distributed import cleanup, init_distributed, rank_info

    dist = rank_info()
    created = False
    if dist.enabled:  # the group is needed before training starts, to share the run key
        dist, created = init_distributed(select_device(cfg.runtime.device).type == "cuda")
    try:
        if not dist.is_main:
            return _train_replica(cfg)
        return _train_main(cfg, tracker, [*callbacks, *_history_recorder(cfg, tracker)])
    finally:
        cleanup(created)


def prepare(cfg: RunConfig) -> tuple[Any, RunConfig]:
    """(PreparedData, the resolved config): everything that can fail on the config alone fails here."""
    from mlproject.data.prepare import prepare_data
    from mlproject.training.device import select_device
    from mlproject.training.preflight import check_fits

    select_device(cfg.runtime.device)  # `--device cuda` on a machine without one: refused before any run exists
    data = prepare_data(cfg.data, cfg.runtime)
    resolved = cfg.resolved(data.vocab_size)
    check_fits(resolved.model, resolved.train, data)
    return data, resolved


def _share(value: Any = None) -> Any:
    """Rank 0's `value` on every rank (itself in a single process). Also a barrier."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


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


def _train_replica(cfg: RunConfig) -> TrainOutcome:
    """A rank other than 0 under torchrun: train with rank 0's run folder and resume checkpoint."""
    from mlproject.training.trainer import train

    run_key, resume_path = _share()  # after rank 0 prepared the data: the caches exist now
    data, resolved = prepare(cfg)
    result = train(resolved.model, data, resolved.train, runtime=resolved.runtime,
                   checkpoint_dir=checkpoint_dir(cfg, run_key),
                   resume_from=resume_path)
    return TrainOutcome(run_key if cfg.tracking.log_to_mlflow else "", "", RUN_STATUS[result.status],
                        dict(result.summary))


def _train_untracked(cfg: RunConfig, resume_path: Path | None, callbacks: Sequence[Any]) -> TrainOutcome:
    """Without a tracker: checkpoints under `checkpoint_dir(cfg, <run name>)`, nothing else recorded."""
    from mlproject.training.trainer import train

    name = cfg.tracking.run_name or f"untracked-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder = checkpoint_dir(cfg, name)
    data, resolved = prepare(cfg)
    _share((name, resume_path))
    result = train(resolved.model, data, resolved.train, runtime=resolved.runtime, checkpoint_dir=folder,
                   callbacks=callbacks, resume_from=resume_path)
    uris = {k: str(p) for k, p in (("last", result.last_checkpoint), ("best", result.best_checkpoint)) if p}
    outcome = TrainOutcome("", "", RUN_STATUS[result.status], dict(result.summary), uris)
    _report(outcome, folder, None)
    return outcome


def _train_main(cfg: RunConfig, tracker: Tracker | None, callbacks: Sequence[Any]) -> TrainOutcome:
    from mlproject.training.trainer import train

    resume_run_id, resume_path = _resume_source(cfg.tracking.resume_from)
    if tracker is None:
        if resume_run_id is not None:
            raise MlprojectError("resume_from a run id needs tracking; give a checkpoint path with log_to_mlflow=false")
        return _train_untracked(cfg, resume_path, callbacks)

    tracker.check()  # an unreachable store fails before the data is prepared
    _check_local_paths(cfg, tracker)
    with sigterm_as_interrupt():
        data, resolved = prepare(cfg)
        if resume_path is not None:  # a file that cannot be resumed from is refused before a run exists
            from mlproject.training.checkpoint import read_resume_checkpoint

            read_resume_checkpoint(resume_path, resolved.model)
        outcome, run, folder = TrainOutcome("", "", RunStatus.FAILED), None, None
        try:
            with tracker.run(resolved, data, resume_run_id=resume_run_id) as run:
                outcome.run_id, outcome.experiment_id = run.run_id, run.experiment_id
                folder = checkpoint_dir(cfg, run.run_id)
                if resume_run_id is not None:
                    resume_path = run.resume_checkpoint(resume_run_id, folder)
                _share((run.run_id, resume_path))
                result = train(resolved.model, data, resolved.train, runtime=resolved.runtime,
                               checkpoint_dir=folder, callbacks=[*run.callbacks, *callbacks],
                               resume_from=resume_path)
                outcome.summary = dict(result.summary)
                outcome.status = RUN_STATUS[result.status]
                run.finish(result, outcome)
        except BaseException:
            if run is None:  # no run was opened: nothing to report
                raise
            if run.status == RunStatus.FINISHED:  # a failed resume of a finished run: it stands
                print(f"note: run {run.run_id} stays FINISHED; nothing was trained", file=sys.stderr)
                raise
            outcome.status, outcome.checkpoint_uris = run.status, dict(run.checkpoint_uris)
            _report(outcome, folder, tracker)  # a scratch folder stays: its checkpoints may not all be logged
            raise
    copy_error = None if run.is_child else _local_copies(resolved, run, result, data, outcome.status, callbacks)
    _report(outcome, _drop_scratch(cfg, folder), tracker)
    if copy_error is not None:
        raise MlprojectError(copy_error)
    return outcome


def checkpoint_dir(cfg: RunConfig, key: str) -> Path:
    """Where run `key` (run id, or an untracked run's name) writes its checkpoints: under `output_dir`
    when given, else a scratch folder in the cache (tracked) or under the local root (untracked)."""
    from mlproject.outdir import local_root

    t = cfg.tracking
    if t.output_dir:
        root = Path(t.output_dir).expanduser()
    elif t.log_to_mlflow:
        root = cfg.runtime.cache_root / SCRATCH
    else:
        root = local_root(t.profile) / "runs"
    return root / key / Artifact.CHECKPOINTS


def _drop_scratch(cfg: RunConfig, folder: Path | None) -> Path | None:
    """Remove a run's scratch folder once its checkpoints are logged; return the folder kept (a
    `--output-dir`), else None."""
    if folder is None or cfg.tracking.output_dir:
        return folder
    shutil.rmtree(folder.parent, ignore_errors=True)
    return None


def _check_local_paths(cfg: RunConfig, tracker: Tracker) -> None:
    """Refuse now, before a run exists, a checkpoint folder or local copy that could not be written."""
    if cfg.tracking.output_dir:
        check_writable(cfg.tracking.output_dir, "output_dir")
    if cfg.tracking.local_copies and not tracker.joins_planned:
        from mlproject.app.local_copies import check_local_copies

        check_local_copies(cfg.tracking.run_name, cfg.tracking.profile)


def _history_recorder(cfg: RunConfig, tracker: Tracker | None) -> list[Any]:
    """The recorder of the original's history file, for a tracked standalone run that writes its files."""
    from mlproject.app.original_files import HistoryRecorder, wants_original_files

    standalone = tracker is not None and not tracker.joins_planned
    return [HistoryRecorder()] if standalone and wants_original_files(cfg) else []


def _local_copies(cfg: RunConfig, run: Any, result: Any, data: Any, status: str,
                  callbacks: Sequence[Any]) -> str | None:
    """Write a standalone run's copies `checkpoints/<name>.*` when asked (and the original's other
    files when a HistoryRecorder is among `callbacks`); return the error line if that failed. The run
    is recorded and ended by then: the line says it is safe."""
    from mlproject.app.local_copies import export_checkpoints
    from mlproject.app.original_files import HistoryRecorder, write_original_files

    recorder = next((c for c in callbacks if isinstance(c, HistoryRecorder)), None)
    name = cfg.tracking.run_name or run.run_name or run.run_id
    try:
        if cfg.tracking.local_copies:
            export_checkpoints(name, cfg.tracking.profile, last=result.last_checkpoint, best=result.best_checkpoint,
                               tokenizer=data.tokenizer_path)
        if recorder is not None:
            write_original_files(cfg, name, recorder.history, last=result.last_checkpoint,
                                 best=result.best_checkpoint)
    except (OSError, MlprojectError) as exc:
        where = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.filename else str(exc)
        return (f"run {run.run_id} is {status} and safe in the tracking store; only its local copies under "
                f"checkpoints/ failed ({where})")
    return None


def summary_text(outcome: TrainOutcome, checkpoint_dir: Path | None, where: str | None) -> str:
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
    if outcome.run_id and where:
        lines.append(f"tracking: {where}")
    return "\n".join(lines)


def _report(outcome: TrainOutcome, checkpoint_dir: Path | None, tracker: Tracker | None) -> None:
    print(summary_text(outcome, checkpoint_dir, tracker.location() if tracker is not None else None), flush=True)
    print(result_line({"step": "train", "run_id": outcome.run_id or None, "status": outcome.status}), flush=True)
