"""Generation throughput with the KV cache: our `generate` against Hugging Face's `generate`.

One set of weights: a random GPT2LMHeadModel (nano sizes, SDPA attention) and our GPT made
from it by `mlproject.model.hf.from_hf`. Both decode greedily from the same random prompts
(128 tokens) for 256 new tokens, with their KV caches, in eval mode; the time includes the
prompt's prefill. The figure is new tokens per second (batch x new tokens / time).

In the same rounds, ours in fp32 against our model cast to bf16 (weights and KV cache; oneDNN's
bf16 kernels on CPUs that have them). Generation runs in fp32 (`mlproject generate`, the pyfunc
model): a decoding step of these sizes is bound by per-op overhead, not by matmul FLOPs or
memory, and bf16 adds casts (bf16 / fp32 was 0.51 at batch 1 and 0.75 at batch 8 on an Intel
Xeon with AMX, 1.00 and 0.94 on an AMD EPYC with AVX512_BF16). The figure checks that this
choice stays the faster one: were bf16 to pay on some CPU, it fails and says so.
"""

from __future__ import annotations

import statistics
import sys

import torch

from benchmarks.harness import Figure, Settings, interleaved, seconds_per_call
from benchmarks.models import NANO, QUICK_NANO, hf_gpt2
from mlproject.inference.generate import generate
from mlproject.model.hf import from_hf

PROMPT, NEW = 128, 256
QUICK_PROMPT, QUICK_NEW = 8, 16


def bench_generation(settings: Settings) -> list[Figure]:
    size = QUICK_NANO if settings.quick else NANO
    prompt_len, new = (QUICK_PROMPT, QUICK_NEW) if settings.quick else (PROMPT, NEW)
    torch.manual_seed(0)
    hf = hf_gpt2(size, block_size=prompt_len + new).eval()
    ours = from_hf(hf).eval()
    ours_bf16 = from_hf(hf).eval().to(torch.bfloat16)
    figures = []
    for batch in (1, 8):
        prompt = torch.randint(0, size.vocab_size, (batch, prompt_len), generator=torch.Generator().manual_seed(batch))
        prompts = prompt.tolist()
        mask = torch.ones_like(prompt)

        def run_ours(n: int = new) -> list[list[int]]:
            return generate(ours, prompts, n, temperature=0.0)

        def run_bf16(n: int = new) -> list[list[int]]:
            return generate(ours_bf16, prompts, n, temperature=0.0)

        def run_hf(n: int = new) -> torch.Tensor:
            with torch.no_grad():
                out = hf.generate(prompt, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  pad_token_id=0)
            return out[:, prompt_len:]

        same = run_ours(8) == run_hf(8).tolist()  # warm-up, and a check that both decode the same tokens
        same_bf16 = run_bf16(8) == run_ours(8)
        print(f"  generate batch {batch}: {settings.repeats} rounds", file=sys.stderr, flush=True)
        results = interleaved({"ours": lambda: seconds_per_call(run_ours, 1),
                               "hf": lambda: seconds_per_call(run_hf, 1),
                               "bf16": lambda: seconds_per_call(run_bf16, 1)}, settings.repeats)
        tokens = batch * new
        figures.append(Figure(
            f"generate_vs_hf_b{batch}",
            f"generate new tokens/s, ours / HF generate, greedy, batch {batch}, prompt {prompt_len}, {new} new",
            "tok/s", tokens / statistics.median(results["ours"]), tokens / statistics.median(results["hf"]), 1.5,
            note="" if same else "first 8 greedy tokens differ from HF's"))
        figures.append(Figure(
            f"generate_fp32_vs_bf16_b{batch}",
            f"generate new tokens/s, ours fp32 (what generate runs) / ours bf16, batch {batch}, prompt {prompt_len}",
            "tok/s", tokens / statistics.median(results["ours"]), tokens / statistics.median(results["bf16"]), 1.0,
            note="" if same_bf16 else "first 8 greedy tokens of bf16 differ from fp32's (bf16 rounding of near-ties)"))
    return figures
