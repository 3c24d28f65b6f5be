"""Tokenization throughput (MB/s of UTF-8 text) on the offline `pydocs` corpus.

Measures, after building the corpus and training its BPE once (both timed too):

1. `encode` one document at a time on one thread: the baseline;
2. one `encode_batch` call over the whole corpus (tokenizers' own Rayon thread pool);
3. the data stage's pipeline (`build_token_caches`: read, held-out split, batched encode on a
   thread pool, write both token files) with 1 worker and with every core.

Repetitions are interleaved (1 2 3 1 2 3 ...) so drifts of a shared machine hit every variant
alike; figures are medians, with the spread (min-max).

    python benchmarks/tokenize_throughput.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mlproject.data.config import DataConfig
from mlproject.data.prepare import build_token_caches
from mlproject.data.pydocs import build_pydocs
from mlproject.data.sources import resolve_corpus
from mlproject.data.tokenizer import save_tokenizer, tokenizer_hash, train_tokenizer


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per variant")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="pipeline threads of the parallel run")
    p.add_argument("--cache-dir", default=None, help="where the corpus is built (default: a temporary directory)")
    return p.parse_args()


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir or tmp)
        corpus = resolve_corpus(DataConfig(dataset="pydocs", cache_dir=str(cache)))
        build_seconds = timed(lambda: build_pydocs(cache))
        texts = [text for _, text in corpus.documents()]
        mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        print(f"corpus: {len(texts)} documents, {mb:.2f} MB, built in {build_seconds:.2f}s")

        t0 = time.perf_counter()
        tokenizer = train_tokenizer((t for _, t in corpus.documents(("train",))), args.vocab_size)
        print(f"BPE training (vocab {args.vocab_size}): {time.perf_counter() - t0:.2f}s")
        tok_path = save_tokenizer(tokenizer, Path(tmp) / "tokenizer.json")
        tok_hash = tokenizer_hash(tok_path)
        num_tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
        print(f"tokens: {num_tokens:,} ({mb * 1e6 / num_tokens:.2f} bytes/token)")

        def pipeline(workers: int) -> Callable[[], object]:
            return lambda: build_token_caches(corpus, tokenizer, tok_hash, Path(tmp) / f"tokens-{workers}",
                                              workers, log=lambda _: None)

        variants: dict[str, Callable[[], object]] = {
            "encode, 1 thread": lambda: [tokenizer.encode(t, add_special_tokens=False) for t in texts],
            "encode_batch (Rayon)": lambda: tokenizer.encode_batch(texts, add_special_tokens=False),
            "pipeline, 1 worker": pipeline(1),
            f"pipeline, {args.workers} workers": pipeline(args.workers),
        }
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for fn in variants.values():  # warm-up: page cache, thread pools, the BPE word cache
            fn()
        for _ in range(args.repeats):
            for name, fn in variants.items():
                seconds[name].append(timed(fn))

    print(f"\n{'variant':<26} {'MB/s':>8} {'(min-max)':>16} {'Mtokens/s':>10}")
    for name, times in seconds.items():
        rates = sorted(mb / t for t in times)
        median = statistics.median(rates)
        print(f"{name:<26} {median:8.2f} {f'({rates[0]:.2f}-{rates[-1]:.2f})':>16} "
              f"{median * num_tokens / mb / 1e6:10.2f}")
    print(f"\n{os.cpu_count()} CPU cores; medians of {args.repeats} interleaved repetitions")


if __name__ == "__main__":
    main()
