"""Validation on fixed windows: the trainer's eval, and the held-out evaluation of a model
(`inference.evaluate`) built on the same windows and sums.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from mlproject.training import distributed as D
from mlproject.training.device import autocast


def eval_windows(num_tokens: int, block_size: int, batch_size: int, eval_batches: int,
                 world_size: int = 1) -> torch.Tensor:
    """Start indices of the fixed validation windows: consecutive, non-overlapping, in order.

    The same windows every evaluation, so val_loss curves compare checkpoints, not samples:
    eval_batches batches of batch_size per process (0: every window of the split), so N
    processes evaluate what one process with N times the batch size would.
    """
    n = (num_tokens - 1) // block_size  # each window needs block_size + 1 tokens (inputs + shifted targets)
    if eval_batches > 0:
        n = min(n, eval_batches * batch_size * world_size)
    return torch.arange(n, dtype=torch.int64) * block_size


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokens: Any, starts: torch.Tensor, block_size: int, batch_size: int,
             device: torch.device, amp: torch.dtype | None, info: D.DistInfo,
             token_bytes: torch.Tensor | None = None) -> dict[str, float]:
    """val_loss (mean token cross-entropy), val_ppl and val_token_acc over `starts`, sharded by rank.

    With `token_bytes` (UTF-8 bytes per token id, `data.bpb.token_byte_lengths`) also val_bpb:
    the summed nats over ln 2 times the bytes of the evaluated targets (see `data.bpb`).
    """
    from mlproject.data.batches import get_batch
    from mlproject.data.bpb import bits_per_byte

    was_training = model.training
    model.eval()
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    sums = torch.zeros(4, dtype=acc_dtype, device=device)  # loss sum, correct, tokens, target bytes
    mine = starts[info.rank::info.world_size]
    for i in range(0, len(mine), batch_size):
        x, y = get_batch(tokens, mine[i:i + batch_size], block_size)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits, _ = model(x)
        logits = logits.float().view(-1, logits.size(-1))  # (B*T, V)
        y = y.view(-1)
        sums[0] += F.cross_entropy(logits, y, reduction="sum")
        sums[1] += (logits.argmax(dim=-1) == y).sum()
        sums[2] += y.numel()
        if token_bytes is not None:
            sums[3] += token_bytes[y].sum()
    D.all_reduce_sum_(sums, info)
    model.train(was_training)
    loss = (sums[0] / sums[2]).item()
    out = {"val_loss": loss, "val_ppl": math.exp(min(loss, 700.0)), "val_token_acc": (sums[1] / sums[2]).item()}
    if token_bytes is not None:
        out["val_bpb"] = bits_per_byte(sums[0].item(), sums[3].item())
    return out
