"""Throughput: tokens/s, step time, data-loading share, peak memory, and MFU.

MFU (model FLOPs utilisation, Chowdhery et al., 2022, PaLM appendix B) is the FLOP rate the
model's arithmetic needs at the measured tokens/s, divided by the device's peak. Peaks come
from the vendors' dense (non-sparse) tensor-core figures; on CPUs, which have no such table,
a short matmul probe measures one and caches it per CPU model and thread count.
"""

from __future__ import annotations

import contextlib
import json
import platform
import re
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from mlproject.cpuinfo import cpu_fields
from mlproject.io import atomic_write_text
# (device-name pattern, {compute dtype: dense peak FLOP/s}). First match wins, so specific
# names come before their families. "tf32" is fp32 work on tensor cores (enabled on CUDA).
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    (r"H100.*PCIe", {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51.2e12}),
    (r"H100", {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}),  # SXM
    (r"H200.*NVL", {"bf16": 835.5e12, "fp16": 835.5e12, "tf32": 417.5e12, "fp32": 60e12}),
    (r"H200", {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}),  # SXM
    (r"A100", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    (r"L40S", {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12}),
    (r"\bL4\b", {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12}),
    (r"\bA10\b", {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),
    (r"RTX 4090", {"bf16": 165.2e12, "fp16": 165.2e12, "tf32": 82.6e12, "fp32": 82.6e12}),
    (r"RTX 3090", {"bf16": 71e12, "fp16": 71e12, "tf32": 35.6e12, "fp32": 35.6e12}),
    (r"V100", {"fp16": 125e12, "fp32": 15.7e12}),
    (r"\bT4\b", {"fp16": 65e12, "fp32": 8.1e12}),
]


def table_peak_flops(device_name: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of a named GPU for `dtype` (bf16, fp16, tf32, fp32), or None if unknown."""
    for pattern, peaks in PEAK_FLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peaks.get(dtype)
    return None


def cpu_name() -> str:
    """The CPU's model name as `lscpu` prints it (from /proc/cpuinfo)."""
    return (cpu_fields() or {}).get("model name") or platform.processor() or platform.machine()


def _matmuls(device: torch.device, dtype: torch.dtype) -> list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """The matmul kernels the model can use: torch's, plus oneDNN's for fp32 and bf16 on CPU (model.linear.Linear)."""
    from mlproject.model.linear import ONEDNN_INNER_PRODUCT, onednn_bf16_works, onednn_linear

    # F.linear (a @ b.T) is nn.Linear's kernel and can beat torch.matmul by 3x on the same
    # shapes: on a CPU without bf16 instructions, PyTorch's bf16 linear reached 4-6 GFLOP/s where
    # its bf16 matmul reached 1-2, and a peak from matmul alone put a bf16 model's MFU at 2.
    kernels: list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = [torch.matmul, F.linear]
    onednn_dtype = dtype == torch.float32 or (dtype == torch.bfloat16 and onednn_bf16_works())
    if device.type == "cpu" and onednn_dtype and ONEDNN_INNER_PRODUCT is not None:
        kernels.append(onednn_linear)  # a @ b.T: the same FLOPs on square random inputs
    return kernels


def _own_generator(device: torch.device) -> torch.Generator:
    """A generator of the probe's own: drawing from the global one would shift a run's dropout
    masks by whether its peak came from the probe or from the cache (two equal runs would differ)."""
    return torch.Generator(device=device).manual_seed(0)


def _probe_size(device: torch.device, dtype: torch.dtype, n: int, budget_s: float) -> int:
    """The largest power-of-two size up to n whose matmul takes under `budget_s`.

    A fast kernel gets n. An emulated one (bf16 on a CPU without bf16 instructions runs at about
    0.1 GFLOP/s, so a 2048 matmul takes minutes) is timed where its rate is already flat.
    """
    size, gen = min(n, 128), _own_generator(device)
    while size < n:
        a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
        _sync(device)
        t0 = time.perf_counter()
        a @ a
        _sync(device)
        if (time.perf_counter() - t0) * 8 > budget_s:  # twice the size is 8x the FLOPs
            break
        size *= 2
    return min(size, n)


def probe_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048,
                     repeats: int = 5, budget_s: float = 1.0) -> float:
    """FLOP/s of the best of `repeats` n x n matmuls: a practical peak where no table has one.

    Every matmul kernel the model can use is timed and the fastest sets the peak, so MFU
    measures the model against the best its own kernels reach. n shrinks (by powers of two)
    for a kernel too slow to run an n x n matmul within `budget_s`.
    """
    n, gen = _probe_size(device, dtype, n, budget_s), _own_generator(device)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    best = float("inf")
    for matmul in _matmuls(device, dtype):
        for i in range(repeats + 1):
            _sync(device)
            t0 = time.perf_counter()
            matmul(a, b)
            _sync(device)
            if i:  # the first run pays one-off allocation and kernel selection
                best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _cache_file() -> Path:
    from mlproject.data.config import default_cache_dir

    return Path(default_cache_dir()).expanduser() / "peak_flops.json"


def cpu_peak_flops(dtype: torch.dtype = torch.float32) -> float:
    """The CPU's probed peak, measured once per (CPU model, threads, dtype) and cached as JSON."""
    kernels = "+".join(k.__name__ for k in _matmuls(torch.device("cpu"), dtype))
    key = f"{cpu_name()}|threads={torch.get_num_threads()}|{str(dtype).removeprefix('torch.')}|{kernels}"
    path = _cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache, dict) and isinstance(cache.get(key), (int, float)):
        return float(cache[key])
    peak = probe_peak_flops(torch.device("cpu"), dtype)
    cache = cache if isinstance(cache, dict) else {}
    cache[key] = peak
    try:
        atomic_write_text(path, json.dumps(cache, indent=1))
    except OSError:
        pass  # a read-only cache only costs a re-probe next time
    return peak


def peak_flops(device: torch.device, dtype: torch.dtype | None, override: float | None = None) -> tuple[float, str]:
    """(peak FLOP/s, source) for compute in `dtype` (None: fp32) on `device`.

    Source is "config" (TrainConfig.peak_flops), "table" (a known GPU) or "probe" (measured).
    """
    if override is not None:
        return float(override), "config"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        key = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "tf32") if dtype else "tf32"
        peak = table_peak_flops(name, key)
        if peak is not None:
            return peak, "table"
        return probe_peak_flops(device, dtype or torch.float32, n=4096), "probe"
    if device.type == "cpu":
        return cpu_peak_flops(dtype or torch.float32), "probe"
    return probe_peak_flops(device, dtype or torch.float32), "probe"


def mfu(flops_per_token: float, tokens_per_sec: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over peak (0..1)."""
    return flops_per_token * tokens_per_sec / peak if peak > 0 else float("nan")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocator peak, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class StepTimer:
    """Times training steps over a logging window, excluding evaluation and checkpointing.

    Usage: `with timer.data(): x, y = next_batch()` around data loading, `timer.step(tokens)`
    after each optimizer step, `with timer.paused(): evaluate()` around everything that is not
    training, and `timer.window()` at log time for the metrics since the previous call.
    The device is synchronised only in `window()`, so steps are not serialised by the timer.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.total_tokens = 0
        self.total_sec = 0.0
        self._reset(time.perf_counter())

    def _reset(self, now: float) -> None:
        self._start = now
        self._excluded = 0.0
        self._data_sec = 0.0
        self._tokens = 0
        self._steps = 0

    @contextlib.contextmanager
    def data(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._data_sec += time.perf_counter() - t0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        _sync(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._excluded += time.perf_counter() - t0

    def step(self, tokens: int) -> None:
        self._tokens += tokens
        self._steps += 1

    def window(self) -> dict[str, float]:
        """tokens_per_sec, ms_per_step and data_time_share since the last call; starts a new window."""
        _sync(self.device)
        now = time.perf_counter()
        elapsed = max(now - self._start - self._excluded, 1e-9)
        steps = max(self._steps, 1)
        out = {"tokens_per_sec": self._tokens / elapsed,
               "ms_per_step": 1000.0 * elapsed / steps,
               "data_time_share": min(1.0, self._data_sec / elapsed)}
        self.total_tokens += self._tokens
        self.total_sec += elapsed
        self._reset(now)
        return out

    @property
    def mean_tokens_per_sec(self) -> float:
        """Tokens per second over all closed windows."""
        return self.total_tokens / self.total_sec if self.total_sec > 0 else float("nan")
