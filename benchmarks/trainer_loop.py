"""The whole trainer on a memory-mapped token cache: MLflow tracking on vs off, and data loading.

The nano model (block 256, batch 8, vocab 16384, fp32) trains on random tokens written as a
real token cache (`TokenCacheWriter`, read back through np.memmap, as prepared data is), once
with tracking off and once with an `MlflowLogger` logging every step into a temporary SQLite
store, alternating. Step times are the trainer's own per-step `ms_per_step` (log_interval 1;
evaluation and checkpoints excluded) after warm-up steps, median over steps and runs.

- tracking: the time spent inside the logger's callbacks per step, as a share of the step (and,
  as a note, tokens/s with MLflow over tokens/s without, which run-to-run noise dominates);
- data: the trainer's `data_time_share` (fetching the batch from the cache, in the untracked
  runs): the time to load a batch against the step time.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmarks.harness import Figure, Settings, interleaved
from benchmarks.models import NANO, QUICK_NANO, Size
from mlproject.data.cache import TokenCache, TokenCacheWriter
from mlproject.training.config import RuntimeConfig, TrainConfig
from mlproject.training.resolve import resolve
from mlproject.training.trainer import TrainerCallback, train

TIMED_STEPS, QUICK_TIMED_STEPS = 8, 2


class StepMetrics(TrainerCallback):
    """The trainer's per-step metrics (log_interval=1) after `warmup` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.ms: list[float] = []
        self.data_share: list[float] = []

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        if step > self.warmup:
            self.ms.append(metrics["ms_per_step"])
            self.data_share.append(metrics["data_time_share"])


def _token_cache(path: Path, vocab_size: int, num_tokens: int, seed: int) -> TokenCache:
    """A real token cache of random documents (1000 tokens each, plus the end-of-text id 0)."""
    rng = np.random.default_rng(seed)
    writer = TokenCacheWriter(path, vocab_size=vocab_size, eot_id=0, meta={"dataset": "random"})
    for _ in range(num_tokens // 1001 + 1):
        writer.write([rng.integers(1, vocab_size, 1000)])
    return writer.close()


def bench_trainer_loop(settings: Settings) -> list[Figure]:
    import mlflow
    from mlflow import MlflowClient

    from mlproject.config import flatten
    from mlproject.tracking.logger import MlflowLogger
    from mlproject.tracking.client import end_run, start_run

    size: Size = QUICK_NANO if settings.quick else NANO
    warmup = settings.warmup + 1  # the first step also builds the optimizer state
    steps = warmup + (QUICK_TIMED_STEPS if settings.quick else TIMED_STEPS)
    model_cfg, cfg = resolve(size.gpt_config(), TrainConfig(
        batch_size=size.batch_size, max_steps=steps, log_interval=1, eval_interval=10**6, eval_batches=1,
        save_every=0, precision="fp32"), size.vocab_size)
    runtime = RuntimeConfig(device="cpu", progress="lines")
    previous_uri = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        root = Path(tmp)
        window = size.batch_size * (size.block_size + 1)
        data = SimpleNamespace(vocab_size=size.vocab_size,
                               train=_token_cache(root / "train.bin", size.vocab_size, (steps + 2) * window, 0),
                               val=_token_cache(root / "val.bin", size.vocab_size, 2 * window, 1))
        mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
        # artifacts (the uploaded checkpoints) in the temporary directory, not ./mlruns
        MlflowClient().create_experiment("bench-tracking", artifact_location=(root / "artifacts").as_uri())
        runs: dict[str, list[StepMetrics]] = {"off": [], "on": []}
        callback_ms: list[float] = []  # per step, inside MlflowLogger

        def run(tracked: bool) -> float:
            metrics = StepMetrics(warmup)
            callbacks: list[Any] = [metrics]
            if tracked:
                active = start_run(experiment_name="bench-tracking")
                logger = MlflowLogger(active.run_id, {**flatten(model_cfg, "model"), **flatten(cfg, "train")})
                callbacks.append(logger)
            with contextlib.redirect_stdout(io.StringIO()):  # the trainer's per-step lines
                train(model_cfg, data, cfg, runtime=runtime, checkpoint_dir=root / f"ckpt-{len(runs['on'])}-{tracked}",
                      callbacks=callbacks)
            if tracked:
                logger.finish()
                end_run("FINISHED")
                callback_ms.append(1000 * logger.overhead_sec / steps)
            runs["on" if tracked else "off"].append(metrics)
            return statistics.median(metrics.ms)

        run(True)  # creates the store and the experiment, outside the timed runs
        runs["on"].clear()
        callback_ms.clear()
        print(f"  trainer loop: {settings.repeats} rounds of {steps}-step runs, tracking off and on",
              file=sys.stderr, flush=True)
        ms = interleaved({"off": lambda: run(False), "on": lambda: run(True)}, settings.repeats)
        mlflow.set_tracking_uri(previous_uri)

    tokens = size.batch_size * size.block_size
    off_ms, on_ms = statistics.median(ms["off"]), statistics.median(ms["on"])
    share = statistics.median(s for m in runs["off"] for s in m.data_share)
    in_callbacks = statistics.median(callback_ms)
    return [
        # The share of a step spent inside the logger is the figure: tokens/s with tracking on over
        # off moves a few percent either way between runs (noise far above the ~0.1% it measures).
        Figure("tracking_overhead", f"time inside the MLflow callbacks (logging every step) / step time, {size.name}",
               "ms", in_callbacks, on_ms, 0.01, at_least=False,
               note=f"tokens/s with tracking on / off: {off_ms / on_ms:.3f} (run-to-run noise of a few percent)"),
        Figure("data_loading_share", f"batch loading from the token cache / step time, {size.name}", "ms",
               share * off_ms, off_ms, 0.02, at_least=False),
    ]
