"""What the application asks of a tracking backend.

- `Tracker` opens the run a training step records into; `TrackedRun` is that run. The
  application (`app/train.py`) prepares, resolves and trains; a tracker only records.
  MLflow's: `tracking.train_tracker.MlflowTracker`. Without one (`tracking.log_to_mlflow:
  false`) a run writes its checkpoints locally and nothing else.
- `ModelStore` fetches the models that generate, evaluate and export-hf use and records what
  they produced. MLflow's: `tracking.model_store.MlflowModelStore`. Without one, only local
  checkpoints can be used and nothing is recorded.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlproject.app.config import RunConfig
    from mlproject.app.model_source import ModelRef, Source
    from mlproject.inference.config import GenerateConfig
    from mlproject.inference.eval_config import EvaluateConfig, ExportConfig
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

    def check(self) -> None:
        """Raise a one-line error now if the store cannot be reached or opened."""

    @property
    def joins_planned(self) -> bool:
        """True when the run is one a sweep planned (a child): such a run makes no local copies."""

    def run(self, cfg: RunConfig, data: Any, *,
            resume_run_id: str | None) -> contextlib.AbstractContextManager[TrackedRun]:
        """Start (or join) the run for the resolved `cfg` on `data` (a PreparedData); the
        context ends it FAILED or KILLED if the block raises."""

    def location(self) -> str:
        """Where the runs are recorded, safe to print (no credentials)."""


class ModelStore(Protocol):
    """Where models live and what the model commands record."""

    def fetch(self, ref: ModelRef, workdir: Path, *, command: str) -> Source:
        """The checkpoint (or logged weights) and tokenizer `ref` names, downloaded into `workdir`."""

    def run_data(self, run_id: str, workdir: Path) -> dict[str, Any] | None:
        """The `data` section of the run's resolved config, if it was logged."""

    def record_generations(self, cfg: GenerateConfig, texts: list[str]) -> None:
        """Record the generated texts (with the settings) where the step is tracked."""

    def record_evaluation(self, cfg: EvaluateConfig, source: Source, metrics: dict[str, float],
                          step: int) -> str | None:
        """Log the metrics; return the run that received them (None: not recorded)."""

    def record_export(self, cfg: ExportConfig, source: Source, folder: Path, kind: str) -> None:
        """Attach the Hugging Face export to the source's run, with `kind` (the built-in class, or
        custom code) as its tag (`cfg.log_transformers`: as a transformers model too)."""

