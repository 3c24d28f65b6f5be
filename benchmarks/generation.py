"""Generation throughput with the KV cache: our `generate` against Hugging Face's `generate`.

One set of weights: a random GPT2LMHeadModel (nano sizes, SDPA attention) and our GPT made
from it by `mlproject.model.hf.from_hf`. Both decode greedily from the same random prompts
(128 tokens) for 256 new tokens, with their KV caches, in eval mode; the time includes the
prompt's prefill. The figure is new tokens per second (batch x new tokens / time). In the same rounds, our model
cast to bf16 (weights and KV cache; oneDNN's bf16 kernels on CPUs that have them) against
ours in fp32.
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
            f"generate_bf16_vs_fp32_b{batch}",
            f"generate new tokens/s, ours bf16 / ours fp32, greedy, batch {batch}, prompt {prompt_len}, {new} new",
            "tok/s", tokens / statistics.median(results["bf16"]), tokens / statistics.median(results["ours"]), 1.2,
            note="" if same_bf16 else "first 8 greedy tokens differ from fp32's (bf16 rounding of near-ties)"))
    return figures
