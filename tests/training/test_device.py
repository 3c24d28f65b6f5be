"""Device and precision selection, with CUDA mocked so the GPU paths run on CPU."""

from __future__ import annotations

import os

import pytest
import torch

from mlproject.errors import MlprojectError
from mlproject.model import linear
from mlproject.training import device
from mlproject.training.device import autocast_dtype, needs_grad_scaler, precision_name, select_device

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.fixture
def fake_cuda(monkeypatch):
    """A visible CUDA GPU; `bf16` toggles its bf16 support."""
    state = {"bf16": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: state["bf16"])
    return state


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_picks_cuda_when_available(fake_cuda):
    assert select_device("auto").type == "cuda"


def test_auto_falls_back_to_cpu(no_gpu):
    assert select_device("auto") == CPU


def test_auto_picks_mps_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device("auto").type == "mps"


def test_cuda_requested_without_cuda_is_a_one_line_error(no_gpu):
    with pytest.raises(MlprojectError, match="CUDA is not available") as err:
        select_device("cuda")
    assert "\n" not in str(err.value)


def test_cuda_index_beyond_visible_devices_is_an_error(fake_cuda):
    assert select_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(MlprojectError, match="2 CUDA device"):
        select_device("cuda:5")


def test_unknown_device_is_an_error():
    with pytest.raises(MlprojectError, match="not a device"):
        select_device("gpu0")


def test_auto_precision_is_bf16_on_cuda_with_bf16(fake_cuda):
    assert autocast_dtype(CUDA, "auto") == torch.bfloat16


def test_auto_precision_is_fp32_on_cuda_without_bf16(fake_cuda):
    fake_cuda["bf16"] = False
    assert autocast_dtype(CUDA, "auto") is None


def test_auto_precision_is_fp32_on_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    assert autocast_dtype(CPU, "auto") is None
    assert precision_name(autocast_dtype(CPU, "auto")) == "fp32"


def test_auto_precision_is_bf16_on_cpu_with_native_bf16(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    assert autocast_dtype(CPU, "auto") == torch.bfloat16
    assert precision_name(autocast_dtype(CPU, "auto")) == "bf16"


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu sse avx512f avx512_bf16 avx512_vnni", True),
    ("fpu sse amx_tile amx_bf16", True),
    ("fpu sse avx2 avx512f avx512bw", False),  # bf16 only emulated: slower than fp32
])
def test_cpu_bf16_support_is_read_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
    has_onednn = linear.ONEDNN_INNER_PRODUCT is not None
    assert device.cpu_has_bf16(str(cpuinfo)) is (expected and has_onednn)


def test_cpu_without_cpuinfo_has_no_native_bf16(tmp_path):
    assert device.cpu_has_bf16(str(tmp_path / "absent")) is False


def test_bf16_on_cpu_only_when_asked():
    assert autocast_dtype(CPU, "bf16") == torch.bfloat16


def test_fp16_is_used_only_when_asked(fake_cuda):
    assert autocast_dtype(CUDA, "fp16") == torch.float16
    assert autocast_dtype(CUDA, "auto") != torch.float16


def test_fp16_on_cpu_is_an_error():
    with pytest.raises(MlprojectError, match="fp16"):
        autocast_dtype(CPU, "fp16")


def test_bf16_on_a_gpu_without_bf16_is_an_error(fake_cuda):
    fake_cuda["bf16"] = False
    with pytest.raises(MlprojectError, match="bf16"):
        autocast_dtype(CUDA, "bf16")


@pytest.mark.parametrize(("device", "precision", "expected"), [
    (CUDA, "fp16", True), (CUDA, "bf16", False), (CUDA, "auto", False), (CUDA, "fp32", False),
    (CPU, "bf16", False), (CPU, "fp32", False),
])
def test_grad_scaler_only_for_fp16_on_cuda(fake_cuda, device, precision, expected):
    assert needs_grad_scaler(device, precision) is expected


def test_auto_precision_on_this_cpu_follows_its_flags():
    flags = open("/proc/cpuinfo").read() if os.path.isfile("/proc/cpuinfo") else ""
    native = linear.ONEDNN_INNER_PRODUCT is not None and any(f in flags.split() for f in device.CPU_BF16_FLAGS)
    assert device.cpu_has_bf16() is native
    assert autocast_dtype(CPU, "auto") == (torch.bfloat16 if native else None)
