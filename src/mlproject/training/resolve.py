"""Resolution: the concrete configs a run trains with, filled in once from what the user gave.

A config as loaded leaves things open: a model preset and per-version defaults, the vocabulary
(only the tokenizer knows it), the optimizer recipe's betas and weight decay, the data seed.
`resolve` fills all of them; the application calls it once, after data preparation, and logs
its result, and `train()` accepts nothing else (`require_resolved`), so what a run records is
exactly what it trained.
"""

from __future__ import annotations

import math

from mlproject.config import replace
from mlproject.errors import ConfigError
from mlproject.model.config import GPTConfig
from mlproject.training.config import TrainConfig
from mlproject.training.optim import resolve_recipe

VOCAB_MULTIPLE = 64  # embedding rows padded to a multiple of 64 for efficient matmuls (nanoGPT: 50257 -> 50304)


def padded_vocab(vocab_size: int) -> int:
    """The embedding rows a tokenizer of `vocab_size` tokens gets: up to a multiple of VOCAB_MULTIPLE."""
    return VOCAB_MULTIPLE * math.ceil(vocab_size / VOCAB_MULTIPLE)


def resolve_model(model_cfg: GPTConfig, vocab_size: int) -> GPTConfig:
    """The model config a run trains: concrete sizes, the tokenizer's vocabulary padded to VOCAB_MULTIPLE."""
    return replace(model_cfg, vocab_size=padded_vocab(vocab_size)).resolved()


def resolve_train(train_cfg: TrainConfig, model_version: str) -> TrainConfig:
    """The training config a run uses: the recipe's optimizer settings, data_seed defaulting to seed,
    the precision of `--amp` (amp_dtype), the default warmup fraction when no warmup is given."""
    cfg = resolve_recipe(train_cfg, model_version)
    precision = cfg.amp_dtype if cfg.amp else cfg.precision
    return replace(cfg, data_seed=cfg.seed if cfg.data_seed is None else cfg.data_seed, precision=precision,
                   warmup_fraction=cfg.warmup_share if cfg.warmup_steps is None else None)


def resolve(model_cfg: GPTConfig, train_cfg: TrainConfig, vocab_size: int) -> tuple[GPTConfig, TrainConfig]:
    """Both configs of a run on a tokenizer of `vocab_size` ids."""
    model = resolve_model(model_cfg, vocab_size)
    return model, resolve_train(train_cfg, model.model_version)


def require_resolved(model_cfg: GPTConfig, train_cfg: TrainConfig) -> None:
    """Raise unless both configs are what `resolve` returns (the trainer's entry check)."""
    if (model_cfg.vocab_size is None or model_cfg.vocab_size % VOCAB_MULTIPLE
            or model_cfg != model_cfg.resolved()):
        raise ConfigError("train() needs a resolved model config (training.resolve.resolve); got one with "
                          f"preset={model_cfg.preset!r}, vocab_size={model_cfg.vocab_size!r}")
    if train_cfg != resolve_train(train_cfg, model_cfg.model_version):
        raise ConfigError("train() needs a resolved training config (training.resolve.resolve); recipe, betas, "
                          "weight_decay or data_seed are unset")
