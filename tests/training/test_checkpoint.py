"""Training checkpoints: the loop state and every stateful part round-trip through one layout."""

from __future__ import annotations

import math
import random

import pytest
import torch

from mlproject.data.batches import WindowSampler
from mlproject.errors import MlprojectError
from mlproject.model.checkpoint import load_checkpoint, load_model_checkpoint, save_model_checkpoint
from mlproject.model.config import GPTConfig
from mlproject.model.gpt import GPT
from mlproject.training.checkpoint import TrainingCheckpoint, TrainState, read_resume_checkpoint
from mlproject.training.config import TrainConfig
from mlproject.training.distributed import DistInfo
from mlproject.training.optim import build_optimizer, build_scheduler
from mlproject.training.resolve import resolve

STATE_KEYS = {"step", "tokens_seen", "elapsed_sec", "best_val_loss", "best_val_bpb", "no_improve_evals", "train_loss",
              "window_loss_sum", "window_steps"}


def test_train_state_round_trips_through_its_state_dict():
    state = TrainState(step=7, tokens_seen=896, elapsed_sec=1.5, best_val_loss=2.25, best_val_bpb=1.1,
                       no_improve_evals=2, train_loss=2.5, window_loss_sum=4.75, window_steps=2)
    assert set(state.state_dict()) == STATE_KEYS
    restored = TrainState()
    restored.load_state_dict(state.state_dict())
    assert restored == state


def test_train_state_of_a_checkpoint_without_bpb_or_last_loss_leaves_them_unknown():
    restored = TrainState()
    restored.load_state_dict({"step": 3, "tokens_seen": 10, "elapsed_sec": 0.5, "best_val_loss": 4.0,
                              "no_improve_evals": 0})
    assert restored.step == 3 and math.isnan(restored.best_val_bpb) and math.isnan(restored.train_loss)
    assert restored.window_loss_sum == 0.0 and restored.window_steps == 0  # an empty logging window


def parts(seed: int) -> TrainingCheckpoint:
    """The stateful parts of a tiny run, the model initialised from `seed`."""
    model_cfg, cfg = resolve(GPTConfig(n_layer=1, n_head=2, d_model=32, block_size=16), TrainConfig(), 100)
    torch.manual_seed(seed)
    model = GPT(model_cfg)
    optimizer = build_optimizer(model, cfg)
    return TrainingCheckpoint(model, cfg, optimizer, build_scheduler(optimizer, cfg, total_steps=10),
                              torch.amp.GradScaler("cpu", enabled=False), WindowSampler(16 * 64 + 1, 16, 4, seed=1),
                              TrainState(), torch.device("cpu"), DistInfo())


def test_a_saved_run_is_restored_in_every_part(tmp_path):
    run = parts(seed=0)
    x = torch.randint(0, 100, (2, 16))
    _, loss = run.model(x, x)
    loss.backward()
    run.optimizer.step()
    run.scheduler.step()
    run.sampler.advance()
    run.state = TrainState(step=1, tokens_seen=64, elapsed_sec=0.5, best_val_loss=3.5, best_val_bpb=1.25,
                           no_improve_evals=0, train_loss=float(loss.detach()))
    assert run.save_last(tmp_path / "last.pt")
    expected = torch.rand(3), random.random()  # the streams right after the save

    fresh = parts(seed=1)
    fresh.load_state_dict(read_resume_checkpoint(tmp_path / "last.pt", fresh.model.config))
    assert (torch.rand(3).tolist(), random.random()) == (expected[0].tolist(), expected[1])
    assert fresh.state == run.state
    assert fresh.sampler.state_dict() == run.sampler.state_dict()
    assert fresh.scheduler.state_dict() == run.scheduler.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(fresh.model.state_dict().values(), run.model.state_dict().values()))
    moments = lambda p: p.optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(moments(fresh), moments(run))


def test_last_and_best_checkpoints_are_model_checkpoints_too(tmp_path):
    run = parts(seed=0)
    run.state.step, run.state.best_val_loss = 4, 2.0
    run.save_last(tmp_path / "last.pt")
    run.save_best(tmp_path / "best.pt")
    best = load_checkpoint(tmp_path / "best.pt")
    assert {k for k in best if k not in ("format", "version")} == {"model_config", "model", "train_config", "step",
                                                                   "val_loss"}
    assert (best["step"], best["val_loss"]) == (4, 2.0)
    for name in ("last.pt", "best.pt"):
        model, _ = load_model_checkpoint(tmp_path / name)
        assert model.config == run.model.config


def test_resuming_needs_a_training_checkpoint_of_the_same_model(tmp_path):
    run = parts(seed=0)
    save_model_checkpoint(tmp_path / "model.pt", run.model)
    with pytest.raises(MlprojectError, match="model-only"):
        read_resume_checkpoint(tmp_path / "model.pt", run.model.config)
    run.save_last(tmp_path / "last.pt")
    wider = GPTConfig(**{**vars(run.model.config), "d_model": 64})
    with pytest.raises(MlprojectError, match="d_model=32 in the checkpoint, 64 now"):
        read_resume_checkpoint(tmp_path / "last.pt", wider)
