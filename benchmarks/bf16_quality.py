"""bf16 quality check: final val loss of nano runs in bf16 autocast against fp32, 3 seeds each.

The gate for `--precision auto` choosing bf16 on CPUs: the bf16 mean must lie within one
seed standard deviation of the fp32 mean. Runs the real trainer on the offline pydocs corpus
(the data stage's tokenizer and token caches), no tracking; runs of the two precisions
alternate seed by seed so a drifting machine load hits both alike.

    python -m benchmarks.bf16_quality                     # 400 steps, seeds 1 2 3
    python -m benchmarks.bf16_quality --steps 20 --block-size 64 --batch-size 4   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from mlproject.data.config import DataConfig, DataRuntimeConfig
from mlproject.data.prepare import prepare_data
from mlproject.model.config import GPTConfig
from mlproject.training.config import RuntimeConfig, TrainConfig
from mlproject.training.resolve import resolve
from mlproject.training.trainer import TrainerCallback, train


class FinalEval(TrainerCallback):
    def __init__(self) -> None:
        self.val_loss = float("nan")
        self.tokens_per_sec: list[float] = []

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.val_loss = metrics["val_loss"]

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self.tokens_per_sec.append(metrics["tokens_per_sec"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bf16_quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-batches", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--cache-dir", default=None, help="data cache root (default: the project's)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    data = prepare_data(DataConfig(dataset="pydocs"), DataRuntimeConfig(cache_dir=args.cache_dir))
    model_cfg = GPTConfig(preset="nano", block_size=args.block_size, dropout=0.0)
    results: dict[str, list[float]] = {"fp32": [], "bf16": []}
    speed: dict[str, list[float]] = {"fp32": [], "bf16": []}
    t0 = time.perf_counter()
    for i, seed in enumerate(args.seeds):
        for precision in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
            cb = FinalEval()
            cfg = TrainConfig(batch_size=args.batch_size, max_steps=args.steps, epochs=1000, seed=seed,
                              precision=precision, eval_interval=args.steps, eval_batches=args.eval_batches,
                              log_interval=10, save_every=0)
            runtime = RuntimeConfig(device="cpu", progress="lines", num_threads=args.threads, cache_dir=args.cache_dir)
            model, cfg = resolve(model_cfg, cfg, data.vocab_size)
            with tempfile.TemporaryDirectory() as tmp:
                train(model, data, cfg, runtime=runtime, checkpoint_dir=Path(tmp), callbacks=[cb])
            results[precision].append(cb.val_loss)
            speed[precision].append(statistics.median(cb.tokens_per_sec))
            print(f"seed {seed} {precision}: val_loss {cb.val_loss:.4f}, "
                  f"{speed[precision][-1]:,.0f} tok/s (median of log windows)", flush=True)
    mean = {k: statistics.mean(v) for k, v in results.items()}
    std = {k: statistics.stdev(v) if len(v) > 1 else float("nan") for k, v in results.items()}
    within = abs(mean["bf16"] - mean["fp32"]) <= std["fp32"]
    out = {"steps": args.steps, "threads": args.threads, "seeds": args.seeds, "block_size": args.block_size, "batch_size": args.batch_size,
           "val_loss": results, "mean": mean, "std": std, "bf16_within_one_fp32_std": within,
           "tokens_per_sec_median": {k: statistics.median(v) for k, v in speed.items()},
           "elapsed_sec": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
