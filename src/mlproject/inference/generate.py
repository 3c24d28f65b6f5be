"""Autoregressive generation with the model's KV cache, batched over prompts.

Prompts of equal length run as one batch, so no padding (and no attention mask for it) is
needed. With the KV cache each step feeds only the newest token; without it the model re-reads
the whole sequence, cropped to the last `block_size` tokens (a sliding window).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from mlproject.errors import MlprojectError
from mlproject.inference.config import GenerateConfig
from mlproject.inference.sampling import apply_repetition_penalty, sample_next


@torch.no_grad()
def generate(model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, *,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             repetition_penalty: float = 1.0, eot_id: int | None = None,
             generator: torch.Generator | None = None, use_cache: bool = True,
             on_token: Callable[[int, int], None] | None = None,
             vocab_limit: int | None = None) -> list[list[int]]:
    """New tokens for each prompt (the eot token itself is not included).

    A sequence stops at `eot_id`. `on_token(prompt_index, token_id)` is called for every new
    token as it is produced. `vocab_limit` forbids ids >= it (embedding rows padded beyond the
    tokenizer's vocabulary). With the cache the prompt plus the new tokens must fit in
    block_size; without it the model sees the last block_size tokens.
    """
    if max_new_tokens < 0:
        raise MlprojectError(f"max_new_tokens={max_new_tokens} must be >= 0")
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise MlprojectError(f"prompt {i} is empty; generation needs at least one token")
        by_length[len(prompt)].append(i)
    outputs: list[list[int]] = [[] for _ in prompts]
    if max_new_tokens == 0:
        return outputs
    was_training = model.training
    model.eval()
    try:
        for length in sorted(by_length):
            rows = by_length[length]
            _generate_batch(model, [prompts[i] for i in rows], rows, outputs, max_new_tokens,
                            temperature=temperature, top_k=top_k, top_p=top_p,
                            repetition_penalty=repetition_penalty, eot_id=eot_id, generator=generator,
                            use_cache=use_cache, on_token=on_token, vocab_limit=vocab_limit)
    finally:
        model.train(was_training)
    return outputs


def _generate_batch(model: torch.nn.Module, prompts: list[list[int]], rows: list[int], outputs: list[list[int]],
                    max_new_tokens: int, *, temperature: float, top_k: int | None, top_p: float | None,
                    repetition_penalty: float, eot_id: int | None, generator: torch.Generator | None,
                    use_cache: bool, on_token: Callable[[int, int], None] | None,
                    vocab_limit: int | None) -> None:
    """Generate for equal-length prompts, appending to outputs[rows[b]]."""
    block_size = model.config.block_size
    device = next(model.parameters()).device
    seq = torch.tensor(prompts, dtype=torch.long, device=device)  # (B, T0)
    B, T0 = seq.shape
    cache = None
    if use_cache:
        seen = T0 + max_new_tokens - 1  # the last new token is never fed back
        if seen > block_size:
            raise MlprojectError(
                f"a {T0}-token prompt plus max_new_tokens={max_new_tokens} exceeds block_size={block_size} "
                "with the KV cache; lower max_new_tokens or use use_cache=False (sliding window)")
        cache = model.new_kv_cache(B, seen, device=device)
        logits, _ = model(seq, kv_cache=cache, logits="last")  # prefill: the whole prompt at once
    done = [False] * B
    for i in range(max_new_tokens):
        if cache is None:
            logits, _ = model(seq[:, -block_size:], logits="last")
        next_logits = logits[:, -1, :].float()  # (B, V)
        if vocab_limit is not None and vocab_limit < next_logits.size(-1):
            next_logits[:, vocab_limit:] = float("-inf")
        next_logits = apply_repetition_penalty(next_logits, seq, repetition_penalty)
        tokens = sample_next(next_logits, temperature=temperature, top_k=top_k, top_p=top_p,
                             generator=generator)  # (B,)
        for b, token in enumerate(tokens.tolist()):
            if done[b]:
                continue
            if token == eot_id:
                done[b] = True
                continue
            outputs[rows[b]].append(token)
            if on_token is not None:
                on_token(rows[b], token)
        if all(done) or i == max_new_tokens - 1:
            break
        seq = torch.cat([seq, tokens.unsqueeze(1)], dim=1)  # (B, T+1)
        if cache is not None:
            logits, _ = model(tokens.unsqueeze(1), kv_cache=cache, logits="last")


class _StreamPrinter:
    """Prints decoded text as tokens arrive, holding back incomplete UTF-8 characters.

    Byte-level BPE tokens can end inside a multi-byte character; decoding then yields U+FFFD
    until the rest arrives, so printing waits for it.
    """

    def __init__(self, tokenizer: Any, prompt_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.ids = list(prompt_ids)
        self.printed = tokenizer.decode(self.ids)
        sys.stdout.write(self.printed)
        sys.stdout.flush()

    def add(self, token: int) -> None:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return
        sys.stdout.write(text[len(self.printed):])
        sys.stdout.flush()
        self.printed = text


def generate_text(model: torch.nn.Module, tokenizer: Any, cfg: GenerateConfig, eot_id: int | None) -> list[str]:
    """Generate from `cfg.prompts` and print the texts (prompt + continuation) to stdout.

    Streams token by token when cfg.stream (default: stdout is a terminal and one prompt);
    streamed prompts run one at a time. An empty prompt starts from `eot_id`, the document
    separator, as GPT-2 does for unconditional samples. Returns the texts.
    """
    stream = cfg.stream if cfg.stream is not None else (sys.stdout.isatty() and len(cfg.prompts) == 1)
    if not stream:
        texts = complete(model, tokenizer, cfg, eot_id)
        for i, text in enumerate(texts):
            print(f"--- sample {i + 1}/{len(texts)}" if len(texts) > 1 else "---")
            print(text, flush=True)
        return texts
    return complete(model, tokenizer, cfg, eot_id, stream=True)


def complete(model: torch.nn.Module, tokenizer: Any, cfg: GenerateConfig, eot_id: int | None, *,
             stream: bool = False) -> list[str]:
    """The texts (prompt + continuation) for `cfg.prompts`, as one batch; streamed to stdout
    one prompt at a time with `stream`. The pyfunc model and the CLI both generate here."""
    device = next(model.parameters()).device
    prompts = []
    for text in cfg.prompts:
        ids = tokenizer.encode(text).ids
        if not ids:
            if eot_id is None:
                raise MlprojectError("an empty prompt needs an end-of-text token to start from")
            ids = [eot_id]
        prompts.append(ids)
    generator = torch.Generator(device=device).manual_seed(cfg.seed) if cfg.seed is not None else None
    block_size = model.config.block_size
    options = dict(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                   repetition_penalty=cfg.repetition_penalty, eot_id=eot_id if cfg.stop_at_eos else None,
                   generator=generator, vocab_limit=tokenizer.get_vocab_size())

    def fits(ids: list[int]) -> bool:  # the KV cache needs the whole sequence inside block_size
        return len(ids) + cfg.max_new_tokens - 1 <= block_size

    texts = []
    if stream:
        for ids in prompts:
            printer = _StreamPrinter(tokenizer, ids)
            new = generate(model, [ids], cfg.max_new_tokens, use_cache=fits(ids),
                           on_token=lambda _, token: printer.add(token), **options)[0]
            texts.append(tokenizer.decode(ids + new))
            sys.stdout.write(texts[-1][len(printer.printed):] + "\n")
            sys.stdout.flush()
        return texts
    outputs = generate(model, prompts, cfg.max_new_tokens, use_cache=all(fits(p) for p in prompts), **options)
    return [tokenizer.decode(ids + new) for ids, new in zip(prompts, outputs)]
