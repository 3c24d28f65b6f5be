"""Training checkpoints: a model checkpoint (`model.checkpoint`: format marker, "model_config",
"model") plus everything a run needs to continue exactly where it stopped.

`TrainingCheckpoint` is the one place that lays the file out and reads it back, as
torchtitan's checkpointer does over its `Stateful` parts: each part gives its `state_dict()`
and takes it back with `load_state_dict()`. last.pt holds the model, "train_config", the
"optimizer", "scheduler", "scaler" and "sampler" states, "rng" (every rank's), and the
`TrainState` fields at the top level; best.pt holds the model, "train_config", "step" and
"val_loss". Both stay loadable by `model.checkpoint.load_model_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mlproject.errors import MlprojectError
from mlproject.model.checkpoint import clean_state_dict, load_checkpoint, model_state, save_checkpoint
from mlproject.model.config import GPTConfig
from mlproject.training import distributed as D
from mlproject.training.config import TrainConfig


@dataclass
class TrainState:
    """The loop's own progress; its fields are top-level keys of last.pt."""

    step: int = 0
    tokens_seen: int = 0
    elapsed_sec: float = 0.0        # training time of every session so far, up to the last save
    best_val_loss: float = math.inf
    best_val_bpb: float = math.nan  # val_bpb of the evaluation with the best val_loss
    no_improve_evals: int = 0       # evaluations since the best one (early stopping's patience)
    train_loss: float = math.nan    # the last step's loss: a run resumed at its final step reports it
    # The logging window: the train loss summed over the steps since the last log (each rank's
    # sum averaged over ranks) and their count, so the first log after a resume averages the
    # same steps as an uninterrupted run's.
    window_loss_sum: float = 0.0
    window_steps: int = 0

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        self.elapsed_sec = float(state["elapsed_sec"])
        self.best_val_loss, self.no_improve_evals = float(state["best_val_loss"]), int(state["no_improve_evals"])
        # Checkpoints written before these were recorded lack them.
        self.best_val_bpb = float(state.get("best_val_bpb", math.nan))
        self.train_loss = float(state.get("train_loss", math.nan))
        self.window_loss_sum = float(state.get("window_loss_sum", 0.0))  # older: an empty window
        self.window_steps = int(state.get("window_steps", 0))


@dataclass(eq=False)
class TrainingCheckpoint:
    """The stateful parts of a run and the layout of their checkpoints (see the module docstring)."""

    model: torch.nn.Module  # the bare model, not its DDP or torch.compile wrapper
    train_cfg: TrainConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    sampler: Any            # data.batches.WindowSampler
    state: TrainState
    device: torch.device
    info: D.DistInfo

    def state_dict(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """The entries of last.pt, with `rng` the states `gather_rng` collected."""
        return {**model_state(self.model), "train_config": dataclasses.asdict(self.train_cfg),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "sampler": self.sampler.state_dict(), "rng": rng,
                **self.state.state_dict()}

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore every part from a last.pt (`read_resume_checkpoint`); call it once all is built."""
        self.model.load_state_dict(clean_state_dict(ckpt["model"]))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.sampler.load_state_dict(ckpt["sampler"])  # refuses a checkpoint of another data or batch layout
        self.state.load_state_dict(ckpt)
        # Last: building the model and the rest drew from the RNG since it was seeded.
        set_rng_state(ckpt["rng"][self.info.rank], self.device)

    def save_last(self, path: Path) -> bool:
        """Write last.pt on rank 0; True where written. Collective under DDP: every rank calls it."""
        rng = gather_rng(self.device, self.info)
        if not self.info.is_main:
            return False
        save_checkpoint(path, self.state_dict(rng))
        return True

    def save_best(self, path: Path) -> None:
        """Write best.pt (rank 0 only): the model at the best val_loss so far."""
        save_checkpoint(path, {**model_state(self.model), "train_config": dataclasses.asdict(self.train_cfg),
                               "step": self.state.step, "val_loss": self.state.best_val_loss})


def read_resume_checkpoint(path: Path, model_cfg: GPTConfig) -> dict[str, Any]:
    """The training checkpoint at `path`, refused unless it continues a run of `model_cfg`."""
    ckpt = load_checkpoint(path)
    if "optimizer" not in ckpt:
        raise MlprojectError(f"{path} is a model-only checkpoint; resuming needs a training checkpoint (last.pt)")
    diff = _config_diff(ckpt["model_config"], dataclasses.asdict(model_cfg))
    if diff:
        raise MlprojectError(f"cannot resume from {path}: the model differs ({diff})")
    return ckpt


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key}={a.get(key)!r} in the checkpoint, {b.get(key)!r} now"
    return None


# ----------------------------------------------------------------------------- RNG

def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG state: torch's, Python's and, on a GPU, CUDA's."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def gather_rng(device: torch.device, info: D.DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state (its own dropout stream), indexed by rank."""
    mine = rng_state(device)
    if not info.enabled:
        return [mine]
    states: list[Any] = [None] * info.world_size
    torch.distributed.all_gather_object(states, {k: v.cpu() if torch.is_tensor(v) else v for k, v in mine.items()})
    return states
