"""Training-step throughput: our GPT-2 against Hugging Face's, our GPT-3 against our GPT-2, and MFU.

Every side runs the trainer's step on one fixed batch: forward with the loss, backward,
gradient clipping at 1.0, the trainer's AdamW (`build_optimizer`, the same parameter groups
and kernel for every model), `zero_grad(set_to_none=True)`. Our models compute the loss as
the trainer does (`model(x, y)`); Hugging Face's gets the leanest equivalent, F.cross_entropy
on its logits. fp32, no dropout, random tokens (throughput does not depend on the text).

Per size, one interleaved group: our gpt2, HF GPT-2, our gpt3 with dense attention, our gpt3
with its alternating dense/banded layers (window block_size / 2, so the band binds), our gpt2
in bf16 autocast (the trainer's `--precision bf16`: fp32 master weights and AdamW state), and
the 2048 x 2048 fp32 and bf16 matmul probes whose best rates are the peaks for MFU.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from types import SimpleNamespace

import contextlib

import torch
import torch.nn.functional as F

from benchmarks.harness import Figure, Settings, interleaved, seconds_per_call
from benchmarks.models import NANO, QUICK_NANO, QUICK_SMALL, SMALL, Size, hf_gpt2
from mlproject.model.gpt import GPT
from mlproject.training.config import TrainConfig
from mlproject.training.optim import build_optimizer, resolve_recipe
from mlproject.training.throughput import probe_peak_flops

OPTIM = resolve_recipe(TrainConfig(learning_rate=6e-4), "gpt3")  # AdamW betas (0.9, 0.95), decay 0.1
GRAD_CLIP = 1.0


class TrainStep:
    """One side: a model, the trainer's optimizer over its parameters, and a fixed batch."""

    def __init__(self, model: torch.nn.Module, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 size: Size, seed: int = 0, bf16: bool = False) -> None:
        self.model = model.train()
        self.bf16 = bf16
        self.loss = loss
        # GPT.optim_groups only reads model.parameters(): the same decay groups for HF's model
        groups = GPT.optim_groups(model, OPTIM.weight_decay)
        self.optimizer = build_optimizer(SimpleNamespace(optim_groups=lambda _: groups), OPTIM)
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, size.vocab_size, (size.batch_size, size.block_size), generator=g)
        self.y = torch.randint(0, size.vocab_size, (size.batch_size, size.block_size), generator=g)
        self.tokens = size.batch_size * size.block_size

    def step(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext():
            loss = self.loss(self.x, self.y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def _ours(size: Size, model_version: str = "gpt2", bf16: bool = False, **fields: object) -> TrainStep:
    torch.manual_seed(0)
    model = GPT(size.gpt_config(model_version, **fields))
    return TrainStep(model, lambda x, y: model(x, y, logits="none")[1], size, bf16=bf16)


def _hf(size: Size) -> TrainStep:
    torch.manual_seed(0)
    model = hf_gpt2(size)

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=x).logits  # (B, T, V)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))

    return TrainStep(model, loss, size)


def bench_size(size: Size, settings: Settings) -> list[Figure]:
    """The figures of one size; see the module docstring."""
    sides = {
        "gpt2": _ours(size),
        "hf": _hf(size),
        "gpt3_dense": _ours(size, "gpt3", attention_pattern="dense"),
        "gpt3_banded": _ours(size, "gpt3", attention_pattern="alternating", attention_window=size.block_size // 2),
        "gpt2_bf16": _ours(size, bf16=True),
    }
    flops_per_token = sides["gpt2"].model.flops_per_token()
    for side in sides.values():
        for _ in range(settings.warmup):
            side.step()
    probe_n = 256 if settings.quick else 2048
    timed: dict[str, Callable[[], float]] = {
        name: (lambda s=side: seconds_per_call(s.step, settings.steps)) for name, side in sides.items()}
    timed["peak"] = lambda: probe_peak_flops(torch.device("cpu"), n=probe_n)
    timed["peak_bf16"] = lambda: probe_peak_flops(torch.device("cpu"), torch.bfloat16, n=probe_n)
    print(f"  train {size.name}: {len(sides)} models x {settings.repeats} rounds of {settings.steps} steps",
          file=sys.stderr, flush=True)
    results = interleaved(timed, settings.repeats)
    tokens = sides["gpt2"].tokens
    rate = {name: tokens / statistics.median(results[name]) for name in sides}  # tokens/s
    peak = max(results["peak"])  # the best probe: the most demanding peak
    peak_bf16 = max(results["peak_bf16"])
    label = (f"{size.name} ({size.n_layer}L {size.d_model}d), block {size.block_size}, batch {size.batch_size}, "
             f"vocab {size.vocab_size}")
    return [
        Figure(f"train_gpt2_vs_hf_{size.name}", f"train tokens/s, our gpt2 / HF GPT-2 sdpa, {label}", "tok/s",
               rate["gpt2"], rate["hf"], 1.10),
        Figure(f"train_gpt3_dense_vs_gpt2_{size.name}", f"train tokens/s, our gpt3 dense / our gpt2, {size.name}",
               "tok/s", rate["gpt3_dense"], rate["gpt2"], 0.95),
        Figure(f"train_gpt3_banded_vs_gpt2_{size.name}",
               f"train tokens/s, our gpt3 banded (window {size.block_size // 2}) / our gpt2, {size.name}",
               "tok/s", rate["gpt3_banded"], rate["gpt2"], 0.95),
        Figure(f"mfu_{size.name}", f"CPU MFU, our gpt2 {size.name}: model FLOP/s / {probe_n}^2 matmul peak",
               "GFLOP/s", flops_per_token * rate["gpt2"] / 1e9, peak / 1e9, 0.60),
        Figure(f"train_bf16_vs_fp32_{size.name}", f"train tokens/s, our gpt2 bf16 autocast / fp32, {size.name}",
               "tok/s", rate["gpt2_bf16"], rate["gpt2"], 1.6),
        Figure(f"mfu_bf16_{size.name}",
               f"CPU MFU, our gpt2 {size.name} bf16: model FLOP/s / {probe_n}^2 bf16 matmul peak",
               "GFLOP/s", flops_per_token * rate["gpt2_bf16"] / 1e9, peak_bf16 / 1e9, 0.40,
               note=f"fp32 peak {peak / 1e9:.0f}, bf16 peak {peak_bf16 / 1e9:.0f} GFLOP/s "
                    f"({peak_bf16 / peak:.2f}x)"),
    ]


def bench_training(settings: Settings) -> list[Figure]:
    sizes = (QUICK_NANO, QUICK_SMALL) if settings.quick else (NANO, SMALL)
    return [figure for size in sizes for figure in bench_size(size, settings)]
