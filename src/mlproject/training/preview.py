"""A decoded sample during training (`--preview-every`): what the model predicts on a fixed window.

The original suite printed, every N steps, the first 80 tokens of a batch as context, the
reference continuation and the model's teacher-forced argmax. Here the window is the first
validation window, the same at every preview, so successive previews show the model learning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mlproject.training.device import autocast

PREVIEW_TOKENS = 80  # as many as the original showed


@torch.no_grad()
def preview_text(model: torch.nn.Module, tokens: np.ndarray, block_size: int, decode: Callable[[list[int]], str],
                 device: torch.device, amp: Any, step: int) -> str:
    """Context, reference and the model's argmax prediction on the first validation window, decoded."""
    n = min(PREVIEW_TOKENS, block_size, len(tokens) - 1)
    window = torch.from_numpy(np.asarray(tokens[: n + 1], dtype=np.int64)).to(device)
    x, y = window[:-1], window[1:]
    was_training = model.training
    model.eval()
    with autocast(device, amp):
        logits, _ = model(x[None])  # (1, n, V)
    model.train(was_training)
    hyp = logits[0].argmax(dim=-1)
    return (f"preview at step {step} (teacher-forced argmax)\n"
            f"CTX: {decode(x.tolist())!r}\nREF: {decode(y.tolist())!r}\nHYP: {decode(hyp.tolist())!r}")
