"""`mlproject summary`: the model presets side by side, each built and run for one training step.

Per model version x preset: depth/heads/width, parameters (total and non-embedding), training
FLOPs per token (`GPT.flops_per_token`), then one forward/backward pass on random tokens with
its loss (about ln(vocab) at initialisation) and wall time. The step of a large preset runs a
shorter sequence (a fixed FLOP budget per step) so the whole table stays quick on a laptop CPU;
the `tokens` column says how many tokens each step processed.
"""

from __future__ import annotations

import math
import time

import torch

from mlproject.errors import ConfigError
from mlproject.model.config import GPTConfig, preset_sizes
from mlproject.model.gpt import GPT

VOCAB_SIZE = 50304   # GPT-2's 50257 tokens padded to a multiple of 64: the default of a bare call
BATCH_SIZE = 2
STEP_FLOPS = 2e10    # FLOP budget of one timed step: a fraction of a second on two CPU cores
MIN_SEQ_LEN = 8


def _step_seq_len(model: GPT, block_size: int) -> int:
    """Sequence length of the timed step: the full block unless that exceeds STEP_FLOPS."""
    affordable = int(STEP_FLOPS // (BATCH_SIZE * model.flops_per_token()))
    return max(min(block_size, MIN_SEQ_LEN), min(block_size, affordable))


def _build(config: GPTConfig, weights: dict[str, torch.Tensor] | None) -> GPT:
    """The model on CPU, freshly initialised, or using `weights` of a same-shaped model.

    GPT-2 and GPT-3 of one preset have the same parameters (they differ in attention masks
    only), so the table initialises each preset once; the models use learned positions,
    so they have no buffers beyond the parameters to fill.
    """
    with torch.device("meta"):
        model = GPT(config)  # sized without touching memory
    if weights is None:
        model.to_empty(device="cpu")
        model.init_weights()
    else:
        model.load_state_dict(weights, assign=True)
        model.tie_weights()
    return model


def _train_step(model: GPT, seq_len: int, generator: torch.Generator) -> tuple[float, float]:
    """One forward/backward pass on random tokens: (loss, seconds)."""
    idx = torch.randint(0, model.config.vocab_size, (BATCH_SIZE, seq_len + 1), generator=generator)
    model.train()
    start = time.perf_counter()
    _, loss = model(idx[:, :-1], idx[:, 1:], logits="none")
    loss.backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return loss.item(), seconds


def run_summary(presets: list[str], model_versions: list[str], block_size: int,
                vocab_size: int = VOCAB_SIZE) -> list[dict]:
    """Print one row per version x preset (sizes, parameters, FLOPs, one training step) as each is
    built, at `vocab_size` embedding rows; return the rows."""
    for preset in presets:
        preset_sizes(preset)
    for version in model_versions:
        if version not in ("gpt2", "gpt3"):
            raise ConfigError(f"model_version={version!r} is unknown; expected gpt2 or gpt3")
    if block_size <= 0:
        raise ConfigError(f"block_size={block_size} must be positive")

    header = (f"{'version':<8}{'preset':<11}{'L/H/d':>13}{'params':>10}{'non-emb':>10}{'GFLOP/tok':>11}"
              f"{'tokens':>8}{'loss':>8}{'step s':>8}")
    print(f"vocab {vocab_size}, block_size {block_size}, batch {BATCH_SIZE}; "
          f"loss at init should be near ln({vocab_size}) = {math.log(vocab_size):.2f}", flush=True)
    print(header)
    print("-" * len(header))
    generator = torch.Generator().manual_seed(0)
    rows = []
    for preset in presets:
        weights: dict[str, torch.Tensor] | None = None  # one initialisation shared by the versions
        for version in model_versions:
            config = GPTConfig(model_version=version, preset=preset, block_size=block_size,
                               vocab_size=vocab_size, dropout=0.0).resolved()
            model = _build(config, weights)
            weights = model.state_dict()
            seq_len = _step_seq_len(model, block_size)
            loss, seconds = _train_step(model, seq_len, generator)
            row = {
                "model_version": version, "preset": preset, "n_layer": config.n_layer,
                "n_head": config.n_head, "d_model": config.d_model, "params": model.num_params(),
                "params_non_embedding": model.num_params(exclude_embeddings=True),
                "flops_per_token": model.flops_per_token(), "step_tokens": BATCH_SIZE * seq_len,
                "loss": loss, "step_seconds": seconds,
            }
            rows.append(row)
            shape = f"{config.n_layer}/{config.n_head}/{config.d_model}"
            print(f"{version:<8}{preset:<11}{shape:>13}{row['params'] / 1e6:>9.1f}M"
                  f"{row['params_non_embedding'] / 1e6:>9.1f}M{row['flops_per_token'] / 1e9:>11.3f}"
                  f"{row['step_tokens']:>8}{loss:>8.3f}{seconds:>8.2f}", flush=True)
            del model
    return rows
