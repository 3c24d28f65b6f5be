"""What the application asks of a tracking backend: `Tracker` opens a run, `TrackedRun` is one.

The application (`app/train.py`) prepares, resolves and trains; a tracker only records. The
MLflow implementation is `tracking.train_tracker.MlflowTracker`; a run without a tracker
(`tracking.log_to_mlflow: false`) writes its checkpoints locally and nothing else.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlproject.app.config import RunConfig
    from mlproject.app.train import TrainOutcome
    from mlproject.training.trainer import TrainerCallback, TrainResult


class TrackedRun(Protocol):
    """One training run as the tracker records it.

    `status` and `checkpoint_uris` are set when the run ends, also when it ends by an error:
    KILLED (interrupted: resumable), FAILED, or FINISHED when a resume of a finished run
    failed before training started (the finished result stands).
    """

    run_id: str
    experiment_id: str
    run_name: str
    is_child: bool  # a sweep's child: its parent reports it
    status: str
    checkpoint_uris: dict[str, str]

    @property
    def callbacks(self) -> list[TrainerCallback]:
        """The trainer callbacks that record this run."""

    def resume_checkpoint(self, run_id: str, checkpoint_dir: Path) -> Path:
        """The training checkpoint (last.pt) of run `run_id`, fetched into `checkpoint_dir`'s folder."""

    def finish(self, result: TrainResult, outcome: TrainOutcome) -> None:
        """Record the result (and the model) and end the run; fills `outcome`'s URIs."""


class Tracker(Protocol):
    """Opens the run a training step records into."""

    def run(self, cfg: RunConfig, data: Any, *,
            resume_run_id: str | None) -> contextlib.AbstractContextManager[TrackedRun]:
        """Start (or join) the run for the resolved `cfg` on `data` (a PreparedData); the
        context ends it FAILED or KILLED if the block raises."""

    def location(self) -> str:
        """Where the runs are recorded, safe to print (no credentials)."""
