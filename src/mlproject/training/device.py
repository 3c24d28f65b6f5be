"""Device and numeric precision: which accelerator, which autocast dtype, whether to scale losses."""

from __future__ import annotations

import contextlib
import ctypes
import functools

import torch

from mlproject.cpuinfo import CPUINFO, cpu_fields
from mlproject.errors import MlprojectError


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def select_device(spec: str) -> torch.device:
    """`auto` picks cuda, else mps, else cpu; an explicit device that is absent is an error."""
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise MlprojectError(f"device={spec!r} is not a device; expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MlprojectError(f"device={spec!r} but CUDA is not available "
                                 f"(torch {torch.__version__}, no visible GPU or a CPU-only build)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MlprojectError(f"device={spec!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type == "mps":
        if not _mps_available():
            raise MlprojectError(f"device={spec!r} but MPS (Apple GPU) is not available")
    elif device.type != "cpu":
        raise MlprojectError(f"device={spec!r} is not supported; expected auto, cpu, cuda, cuda:N or mps")
    return device


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None for plain fp32.

    auto: bf16 on CUDA GPUs that support it (Ampere and newer) and on CPUs with bf16 matmul
    instructions (`cpu_has_bf16`), else fp32. bf16 keeps fp32's exponent range, so it needs no
    loss scaling; fp16 (only when asked, CUDA only) does. Elsewhere (MPS, CPUs without them,
    where bf16 is emulated and slower than fp32) auto means fp32.
    """
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and cpu_has_bf16():
            return torch.bfloat16
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise MlprojectError("precision='bf16' but this GPU does not support bf16; use fp16 or fp32")
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise MlprojectError(f"precision='fp16' needs CUDA (loss scaling); use bf16 or fp32 on {device.type}")
        return torch.float16
    raise MlprojectError(f"precision={precision!r} is unknown; expected auto, fp32, bf16 or fp16")


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of the native bf16 dot products


@functools.cache
def cpu_has_bf16(cpuinfo: str = CPUINFO) -> bool:
    """Whether the CPU multiplies bf16 natively (AVX512_BF16 or AMX-BF16) and oneDNN can use it.

    Without these instructions oneDNN emulates bf16 through fp32 and a bf16 step is slower
    than an fp32 one. Read from the kernel's CPU flags (Linux x86); False elsewhere.
    """
    from mlproject.model.linear import ONEDNN_INNER_PRODUCT

    flags = (cpu_fields(cpuinfo) or {}).get("flags", "").split()
    return ONEDNN_INNER_PRODUCT is not None and any(flag in flags for flag in CPU_BF16_FLAGS)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device` (`autocast_dtype`'s choice); None: plain fp32."""
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def precision_name(dtype: torch.dtype | None) -> str:
    """The precision actually used: fp32, bf16 or fp16."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32") if dtype else "fp32"


def needs_grad_scaler(device: torch.device, precision: str) -> bool:
    """fp16 on CUDA underflows small gradients without loss scaling; nothing else needs it."""
    return device.type == "cuda" and autocast_dtype(device, precision) == torch.float16


def configure_backends(device: torch.device) -> None:
    """Process-wide speed settings for training on `device`.

    CUDA: allow TF32 tensor-core matmuls for fp32 work (about 8x A100 fp32 throughput, 10-bit
    mantissa products with fp32 accumulation; harmless for training). CPU: `keep_freed_memory`.
    """
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    elif device.type == "cpu":
        keep_freed_memory()


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep large freed blocks for reuse instead of returning them to the OS.

    By default glibc maps every block above 32 MiB afresh and unmaps it when freed, so each
    training step page-faults and zero-fills its large activations and gradients again (the
    (B*T, V) logits alone are 128 MiB at batch 8, block 256, vocab 16384): 10-15% of a CPU
    step, more in VMs. With higher mmap and trim thresholds they stay in the heap; the price is
    that the process keeps its peak memory. Returns False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
