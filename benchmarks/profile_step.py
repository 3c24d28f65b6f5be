"""Where a training step goes: torch.profiler over the suite's step, ops grouped by kind.

    python -m benchmarks.profile_step                      # nano and small, bf16 and fp32, 2 threads
    python -m benchmarks.profile_step --sizes nano --precisions bf16 --steps 3

The step is `benchmarks.training`'s (the trainer's: forward with the loss, backward, clip,
fused AdamW, zero_grad). Each op's self time goes to one group: matmuls, attention, norms,
activations, casts, loss, optimizer (AdamW and the clipping norm), allocator (empty/zero
tensors), other. Self times are of the profiled thread's ops; under a loaded machine they grow
with the load, the shares much less.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.models import NANO, SMALL
from benchmarks.training import _ours
from mlproject.training.device import configure_backends

GROUPS = {  # the first group whose pattern is part of an op's name wins
    "loss": ("log_softmax", "nll_loss", "cross_entropy", "aten::exp", "gather", "scatter", "LinearCrossEntropy"),
    "matmuls": ("linear_pointwise", "addmm", "aten::mm", "aten::bmm", "matmul"),
    "attention": ("scaled_dot_product", "flash_attention", "softmax_backward", "aten::_softmax"),
    "norms": ("layer_norm", "rms_norm"),
    "activations": ("gelu", "silu"),
    "casts": ("_to_copy", "aten::copy_"),
    "optimizer": ("adamw", "vector_norm", "clip", "aten::mul_", "aten::_foreach"),
    "allocator": ("aten::empty", "aten::zero_", "aten::fill_", "aten::zeros", "aten::resize_"),
}


def group_of(name: str, shapes: list | None = None, vocab_size: int = 0) -> str:
    """The op's group; a softmax over the vocabulary (the chunked loss's) is the loss's, not attention's."""
    if "softmax" in name and shapes and shapes[0] and shapes[0][-1] == vocab_size:
        return "loss"
    return next((group for group, patterns in GROUPS.items() if any(p in name for p in patterns)), "other")


def profile_step(size_name: str, bf16: bool, steps: int) -> dict[str, float]:
    """Milliseconds of self time per step in each group, and the step's wall time ("step")."""
    size = {"nano": NANO, "small": SMALL}[size_name]
    side = _ours(size, bf16=bf16)
    for _ in range(3):  # warm-up: optimizer state, kernel choice, memory
        side.step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            side.step()
    ms: dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        ms[group_of(event.key, event.input_shapes, size.vocab_size)] += event.self_cpu_time_total / 1e3 / steps
    ms["step"] = sum(v for k, v in ms.items())
    return dict(ms)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", choices=("nano", "small"), default=["nano", "small"])
    p.add_argument("--precisions", nargs="+", choices=("bf16", "fp32"), default=["bf16", "fp32"])
    p.add_argument("--steps", type=int, default=3, help="profiled steps, after 3 warm-up steps")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    configure_backends(torch.device("cpu"))
    print(f"load {os.getloadavg()[0]:.2f}, {args.threads} threads; ms of self time per step (share)")
    columns = [(s, prec) for s in args.sizes for prec in args.precisions]
    results = {col: profile_step(col[0], col[1] == "bf16", args.steps) for col in columns}
    print("| group | " + " | ".join(f"{s} {prec}" for s, prec in columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for group in [*GROUPS, "other", "step"]:
        cells = [f"{results[col].get(group, 0.0):,.0f} ({results[col].get(group, 0.0) / results[col]['step']:.0%})"
                 for col in columns]
        print(f"| {group} | " + " | ".join(cells) + " |")
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
