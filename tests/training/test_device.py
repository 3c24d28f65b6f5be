"""Device and precision selection, with CUDA mocked so the GPU paths run on CPU."""

from __future__ import annotations

import pytest
import torch

from mlproject.errors import MlprojectError
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


def test_auto_precision_is_fp32_on_cpu():
    assert autocast_dtype(CPU, "auto") is None
    assert precision_name(autocast_dtype(CPU, "auto")) == "fp32"


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
