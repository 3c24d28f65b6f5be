"""Held-out evaluation of a model on a text: loss, perplexity, bits per byte and token accuracy,
each with a 95% interval over evaluation batches.

The text is encoded with the model's own tokenizer (documents joined by `<|endoftext|>`, as in
the token caches) and cut into the consecutive, non-overlapping windows of the trainer's
evaluation (`training.evaluation`), up to a fixed budget of target tokens.
Every batch holds the same number of target tokens, so the mean of per-batch losses is the
token-level loss; the interval is mean +- t_{0.975, n-1} * s / sqrt(n) over the n batches
(perplexity's is exp of the loss interval). bpb is total nats over ln 2 x total bytes
(`data.bpb`), its interval from the per-batch bpb values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mlproject.data.bpb import bits_per_byte, token_byte_lengths
from mlproject.errors import MlprojectError

METRICS = ("loss", "ppl", "bpb", "token_acc")


@dataclass
class EvalText:
    """The tokens of an evaluation text and what it is called in metric names."""

    name: str
    tokens: np.ndarray  # int64 ids, documents separated by <|endoftext|>
    docs: int


def encode_documents(name: str, texts: Iterable[str], tokenizer: Any, eot_id: int, max_tokens: int,
                     block_size: int) -> EvalText:
    """Encode documents until the budget (`max_tokens` targets, whole windows) is covered."""
    need = block_size * max(1, max_tokens // block_size) + 1
    parts: list[np.ndarray] = []
    total = docs = 0
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        parts.append(np.asarray([*ids, eot_id], dtype=np.int64))
        total += len(ids) + 1
        docs += 1
        if total >= need:
            break
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return EvalText(name, tokens, docs)


def interval(values: list[float]) -> tuple[float | None, float | None]:
    from mlproject.stats import t_interval  # the suite's one t interval

    bounds = t_interval(values) if all(math.isfinite(v) for v in values) else None
    return (bounds[0], bounds[1]) if bounds else (None, None)


@torch.no_grad()
def evaluate_text(model: torch.nn.Module, text: EvalText, tokenizer: Any, *, max_tokens: int, batch_size: int,
                  block_size: int | None = None, device: Any = "cpu") -> dict[str, float]:
    """`{loss, ppl, bpb, token_acc}` with `<metric>_ci95_low/_high`, plus tokens, bytes, batches."""
    from mlproject.training import distributed as D
    from mlproject.training.evaluation import eval_windows, evaluate

    block_size = block_size or model.config.block_size
    if block_size > model.config.block_size:
        raise MlprojectError(f"evaluate: block_size={block_size} exceeds the model's block_size="
                             f"{model.config.block_size}")
    windows = max(1, max_tokens // block_size)
    starts = eval_windows(len(text.tokens), block_size, windows, 1)
    if len(starts) == 0:
        raise MlprojectError(f"evaluate: dataset {text.name!r} has {len(text.tokens)} tokens, fewer than one "
                             f"window of block_size={block_size} + 1")
    device = torch.device(device)
    byte_lengths = token_byte_lengths(tokenizer)
    byte_table = torch.from_numpy(byte_lengths).to(device)
    per_batch: dict[str, list[float]] = {m: [] for m in ("loss", "bpb", "token_acc")}
    nats = num_bytes = num_tokens = 0.0
    model.eval()
    for i in range(0, len(starts), batch_size):
        batch = starts[i:i + batch_size]
        m = evaluate(model, text.tokens, batch, block_size, len(batch), device, None, D.DistInfo(), byte_table)
        targets = len(batch) * block_size
        target_ids = text.tokens[batch.numpy()[:, None] + 1 + np.arange(block_size)]  # (B, T), as get_batch's y
        per_batch["loss"].append(m["val_loss"])
        per_batch["bpb"].append(m["val_bpb"])
        per_batch["token_acc"].append(m["val_token_acc"])
        nats += m["val_loss"] * targets
        num_bytes += float(byte_lengths[target_ids].sum())
        num_tokens += targets
    loss = nats / num_tokens
    out: dict[str, float] = {
        "loss": loss, "ppl": math.exp(min(loss, 700.0)), "bpb": bits_per_byte(nats, num_bytes),
        "token_acc": float(np.mean(per_batch["token_acc"])),
        "tokens": num_tokens, "bytes": num_bytes, "batches": float(len(per_batch["loss"])),
    }
    for name in ("loss", "bpb", "token_acc"):
        low, high = interval(per_batch[name])
        if low is not None:
            out[f"{name}_ci95_low"], out[f"{name}_ci95_high"] = low, high
    if "loss_ci95_low" in out:
        out["ppl_ci95_low"] = math.exp(min(out["loss_ci95_low"], 700.0))
        out["ppl_ci95_high"] = math.exp(min(out["loss_ci95_high"], 700.0))
    return out


def format_metrics(name: str, metrics: dict[str, float]) -> str:
    """One line per metric: value and 95% interval."""
    lines = [f"{name}: {int(metrics['tokens'])} tokens, {int(metrics['bytes'])} bytes, "
             f"{int(metrics['batches'])} batches"]
    for metric in METRICS:
        low, high = metrics.get(f"{metric}_ci95_low"), metrics.get(f"{metric}_ci95_high")
        ci = f"  95% CI [{low:.4f}, {high:.4f}]" if low is not None else ""
        lines.append(f"  {metric:<10} {metrics[metric]:.4f}{ci}")
    return "\n".join(lines)
