"""The environment half of a run's record: what else decides the numbers besides the code.

Installed distributions (a `pip freeze` equivalent), the Python / torch / CUDA / cuDNN
versions, the CPU (model, flags, bf16 support) and GPUs, thread counts, and the
`torch.backends` switches that change float results (TF32, reduced-precision reductions,
deterministic algorithms, float32 matmul precision, oneDNN). Two runs that agree on all of
these and on the source and data should agree bitwise on CPU.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlproject.cpuinfo import cpu_fields

BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 (AVX-512 / AMX) and Arm (FEAT_BF16) spellings
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# "numpy-2.1.0.dist-info": the wheel spec's directory name carries name and version
_DIST_DIR = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)\.dist-info$")


@dataclass
class EnvironmentRecord:
    """Versions, hardware and numerics settings of the process that trained."""

    distributions: dict[str, str]  # canonical name -> version
    python: str
    platform: str
    torch: str
    cuda: str  # "none" on CPU builds
    cudnn: str
    cpu_model: str
    cpu_bf16: bool | None  # None: not known on this platform
    cpu_flags: list[str] = field(default_factory=list)
    gpus: list[str] = field(default_factory=list)
    threads: dict[str, str] = field(default_factory=dict)
    numerics: dict[str, str] = field(default_factory=dict)


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name: `Typing_Extensions` -> `typing-extensions`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions() -> dict[str, str]:
    """{name: version} of every installed distribution; the first on sys.path wins, as for imports.

    Parsing each METADATA file costs about a second for 250 packages on a busy machine; a
    `.dist-info` folder's name already holds both, so metadata is read only for the others.
    """
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        folder = getattr(dist, "_path", None)  # PathDistribution's folder; other finders have none
        match = _DIST_DIR.match(Path(folder).name) if folder is not None else None
        try:
            name, version = (match["name"], match["version"]) if match else (dist.metadata["Name"], dist.version)
        except (KeyError, TypeError, OSError):
            continue  # a broken install without metadata: nothing to record
        if name:
            found.setdefault(canonical(name), version)
    return dict(sorted(found.items()))


def cpu_info() -> tuple[str, list[str], bool | None]:
    """(model, flags, bf16 support) from /proc/cpuinfo on Linux; the platform's words elsewhere."""
    fields = cpu_fields()
    if fields is None:
        return platform.processor() or platform.machine(), [], None
    model = fields.get("model name") or fields.get("Hardware") or fields.get("CPU part") or platform.machine()
    flags = sorted(set((fields.get("flags") or fields.get("Features") or "").split()))
    return model, flags, any(flag in flags for flag in BF16_FLAGS)


def _setting(read: Callable[[], Any]) -> str:
    """str of a backend setting; "unavailable" when this torch build lacks or refuses it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some switches warn that they are deprecated in favour of others
        try:
            return str(read())
        except Exception:  # noqa: BLE001 - any failure only means the setting cannot be read
            return "unavailable"


def numerics_settings() -> dict[str, str]:
    """The torch switches that change float results (settings in effect now)."""
    import torch

    b = torch.backends
    return {
        "cuda_matmul_allow_tf32": _setting(lambda: b.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": _setting(lambda: b.cudnn.allow_tf32),
        "cuda_matmul_fp16_reduced_precision_reduction":
            _setting(lambda: b.cuda.matmul.allow_fp16_reduced_precision_reduction),
        "cuda_matmul_bf16_reduced_precision_reduction":
            _setting(lambda: b.cuda.matmul.allow_bf16_reduced_precision_reduction),
        "float32_matmul_precision": _setting(torch.get_float32_matmul_precision),
        "deterministic_algorithms": _setting(torch.are_deterministic_algorithms_enabled),
        "cudnn_deterministic": _setting(lambda: b.cudnn.deterministic),
        "cudnn_benchmark": _setting(lambda: b.cudnn.benchmark),
        "mkldnn_enabled": _setting(lambda: b.mkldnn.enabled and b.mkldnn.is_available()),
    }


def thread_settings() -> dict[str, str]:
    """Intra- and inter-op threads (the reduction order of a CPU matmul depends on them)."""
    import torch

    threads = {"torch_threads": _setting(torch.get_num_threads),
               "torch_interop_threads": _setting(torch.get_num_interop_threads),
               "cpu_count": str(os.cpu_count())}
    threads.update({name: os.environ.get(name, "unset") for name in THREAD_VARS})
    return threads


def gpu_names() -> list[str]:
    """Names of the visible CUDA devices ([] without CUDA)."""
    import torch

    with contextlib.suppress(Exception):  # a broken driver must not fail the run
        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def capture_environment() -> EnvironmentRecord:
    """The environment record of this process."""
    import torch

    model, flags, bf16 = cpu_info()
    return EnvironmentRecord(
        distributions=installed_distributions(), python=platform.python_version(),
        platform=f"{platform.system()} {platform.release()} {platform.machine()} ({sys.implementation.name})",
        torch=torch.__version__, cuda=torch.version.cuda or "none",
        cudnn=_setting(lambda: torch.backends.cudnn.version() or "none"),
        cpu_model=model, cpu_bf16=bf16, cpu_flags=flags, gpus=gpu_names(),
        threads=thread_settings(), numerics=numerics_settings())
