"""MlflowLogger: the trainer callback that records a run in MLflow.

Metrics are batched and written in the background. They collect in memory and go out every
FLUSH_EVERY_SEC as one `MlflowClient.log_batch` on the logger's own writer thread: the training
loop never waits for the store, and the store gets one write per few seconds instead of one per
step. That second part matters on small machines: each write costs milliseconds of CPU that the
training threads would otherwise use. Each batch is a `Future`, so the end of a run (and the
upload of a `last.pt`, which must not overtake the metrics of its steps) waits exactly until the
batches are written. MLflow's own async queue (`log_batch(synchronous=False)`) polls with a
one-second timeout and is flushed twice as a run ends: up to two seconds of every run spent
waiting (benchmarks/README.md, "Command latency"). Checkpoints are uploaded by a background
thread. The time spent inside these callbacks is measured and logged as the summary metric
`logging_overhead_share` (of the run's wall time).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric

from mlproject.schema import preview_artifact
from mlproject.tracking.artifacts import CheckpointUploader
from mlproject.tracking import client
from mlproject.tracking.client import log_params_once, metric_batches, set_tags
from mlproject.training.trainer import TrainerCallback, TrainResult

# on_train_start keys recorded as `runtime.*` params (the rest of the run's config is
# flattened from the resolved dataclasses).
RUNTIME_KEYS = ("device", "world_size", "precision", "peak_flops", "peak_flops_source", "params_total",
                "params_non_embedding", "flops_per_token", "total_steps", "steps_per_epoch", "warmup_steps",
                "tokens_per_step")


FLUSH_EVERY_SEC = 2.0  # the most a metric waits in memory (the UI lags by at most this)
MAX_BUFFERED = client.METRICS_PER_BATCH  # metrics per log_batch call

# Summary entries that mean something else than the per-step metric of the same name.
SUMMARY_RENAMES = {"tokens_per_sec": "tokens_per_sec_mean"}


def _report_failure(future: Future) -> None:
    if future.exception() is not None:
        print(f"tracking: a metric batch was not logged: {future.exception()}", file=sys.stderr, flush=True)


def steps_logged_since(client: MlflowClient, run_id: str, start_step: int) -> dict[str, set[int]]:
    """{metric key: steps >= start_step} the run already has: a resumed session does not log them again.

    After a hard kill the store can hold points past the checkpoint the run resumes from; the
    resumed session recomputes the same values there, and logging them twice would duplicate
    the points of those steps.
    """
    out: dict[str, set[int]] = {}
    for key in client.get_run(run_id).data.metrics:
        steps = {m.step for m in client.get_metric_history(run_id, key) if m.step >= start_step}
        if steps:
            out[key] = steps
    return out


def _metrics(values: Mapping[str, Any], step: int) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(key, float(value), now, step) for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)]


class MlflowLogger(TrainerCallback):
    """Logs params at the start, metrics with their step, checkpoints as they are written.

    `params` (the flattened resolved config) are logged when training starts, with the runtime
    facts of the trainer's `info` as `runtime.*`; `on_start(info)` runs then too. Nothing here
    ends the run: the tracker decides the final status.
    """

    def __init__(self, run_id: str, params: Mapping[str, Any] | None = None,
                 on_start: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.client = client.client()
        self.run_id = run_id
        self.params = dict(params or {})
        self.on_start = on_start
        self.uploader = CheckpointUploader(self.client, run_id)
        self.changed_params: dict[str, tuple[str, str]] = {}
        self.overhead_sec = 0.0  # time spent in these callbacks, excluding the one-off start
        self._last: dict[str, tuple[int, float]] = {}  # key -> (step, value) last logged
        self._buffer: list[Metric] = []
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlproject-metrics")  # in order
        self._pending: list[Future] = []  # batches handed to the writer and not known to be written
        self._already: dict[str, set[int]] = {}  # key -> steps the run had before this session (resume)
        self.started = False  # on_train_start ran: training of this session begins
        self._t0 = self._flushed_at = time.perf_counter()

    def on_train_start(self, info: dict[str, Any]) -> None:
        self.started = True
        self._t0 = self._flushed_at = time.perf_counter()
        if info.get("start_step"):
            self._already = steps_logged_since(self.client, self.run_id, int(info["start_step"]))
        params = dict(self.params)
        params.update({f"runtime.{k}": info[k] for k in RUNTIME_KEYS if k in info})
        self.changed_params = log_params_once(self.run_id, params)
        if "device" in info:
            set_tags(self.run_id, {"device": info["device"]})
        if self.on_start is not None:
            self.on_start(info)

    def _log(self, step: int, metrics: Mapping[str, Any], *, flush: bool = False) -> None:
        t = time.perf_counter()
        batch = [m for m in _metrics(metrics, step) if m.step not in self._already.get(m.key, ())]
        self._buffer += batch
        self._last.update({m.key: (m.step, m.value) for m in batch})
        if flush or len(self._buffer) >= MAX_BUFFERED or t - self._flushed_at >= FLUSH_EVERY_SEC:
            self._flush()
        self.overhead_sec += time.perf_counter() - t

    def _flush(self) -> None:
        if self._buffer:
            self._pending = [f for f in self._pending if not f.done()]
            for batch in metric_batches(self._buffer):
                future = self._writer.submit(self.client.log_batch, self.run_id, metrics=batch)
                future.add_done_callback(_report_failure)
                self._pending.append(future)
            self._buffer = []
        self._flushed_at = time.perf_counter()

    @staticmethod
    def _wait_written(pending: list[Future]) -> None:
        """Wait until `pending` batches are written (or failed: reported, not raised, so that the
        checkpoints and the run's end still go through)."""
        wait(pending)

    def _metrics_written(self) -> Callable[[], None]:
        """A wait for every metric batch queued so far (run by the uploader before last.pt goes up).

        A resume starts after the step of the uploaded last.pt: if that checkpoint reached the
        store before the metrics of its steps, a SIGKILL in between would lose those points.
        """
        pending = list(self._pending)
        return lambda: self._wait_written(pending)

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self._log(step, metrics)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._log(step, metrics)

    def on_checkpoint(self, path: Path, kind: str, step: int) -> None:
        t = time.perf_counter()
        if kind == "last":
            self._flush()
            self.uploader.submit(path, kind, before=self._metrics_written())
        else:
            self.uploader.submit(path, kind)
        self.overhead_sec += time.perf_counter() - t

    def on_preview(self, step: int, text: str) -> None:
        t = time.perf_counter()
        self.client.log_text(self.run_id, text, preview_artifact(step))
        self.overhead_sec += time.perf_counter() - t

    def on_train_end(self, result: TrainResult) -> None:
        """Log the summary metrics (at the final step) and the logging overhead.

        A summary value already logged at this step (tokens_seen, peak_mem_mb) is not repeated.
        """
        summary = {SUMMARY_RENAMES.get(k, k): v for k, v in result.summary.items()
                   if self._last.get(SUMMARY_RENAMES.get(k, k)) != (result.step, float(v))}
        wall = time.perf_counter() - self._t0
        if wall > 0:
            summary["logging_overhead_share"] = self.overhead_sec / wall
        self._log(result.step, summary, flush=True)

    def finish(self) -> dict[str, str]:
        """Send buffered metrics, wait for queued uploads; return {kind: runs:/ URI} of the checkpoints.

        Called on every way out of a run (also after an error), before the run ends.
        """
        try:
            self._flush()
            self._wait_written(self._pending)
            self.uploader.flush()
        finally:
            self._writer.shutdown(wait=True)
            self.uploader.close()
        return dict(self.uploader.uploaded)
