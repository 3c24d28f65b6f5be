"""Checks a training config against its prepared data before any run is created.

The trainer finds these problems too, but only after a tracking run exists; a run that can
never train would be left FAILED (or, in a sweep, a parent and children that `--resume`
cannot help). These are the same checks, done on the config and the token counts alone.
"""

from __future__ import annotations

import os
from typing import Any

from mlproject.errors import ConfigError, MlprojectError
from mlproject.model.config import GPTConfig
from mlproject.training.config import TrainConfig


def check_fits(model_cfg: GPTConfig, train_cfg: TrainConfig, data: Any, *, where: str = "") -> None:
    """Raise the trainer's error now if the resolved `model_cfg`/`train_cfg` cannot train on `data`
    (a PreparedData)."""
    from mlproject.data.batches import WindowSampler
    from mlproject.training.evaluation import eval_windows

    prefix = f"{where}: " if where else ""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)  # under torchrun, each rank needs its own windows
    try:
        block_size = model_cfg.block_size
        sampler = WindowSampler(len(data.train.tokens), block_size, train_cfg.batch_size, seed=train_cfg.data_seed,
                                world_size=world)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}training split: {exc}") from None
    if sampler.steps_per_epoch // train_cfg.grad_accum_steps <= 0:
        raise ConfigError(f"{prefix}the training split ({len(data.train.tokens):,} tokens) has too few windows of "
                          f"block_size={block_size} for one step of batch_size={train_cfg.batch_size} x "
                          f"grad_accum_steps={train_cfg.grad_accum_steps}")
    if len(eval_windows(len(data.val.tokens), block_size, train_cfg.batch_size, train_cfg.eval_batches, world)) == 0:
        raise MlprojectError(f"{prefix}the validation split ({len(data.val.tokens):,} tokens) is shorter than one "
                             f"window of block_size={block_size} + 1")
