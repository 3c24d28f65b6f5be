"""The GPU speed settings, checked on CPU with CUDA mocked: TF32, pinned batches, plain linears.

Device selection, the autocast dtype (bf16/fp16/fp32) and the fp16-only GradScaler are
covered in tests/training/test_device.py; fused AdamW on CUDA in test_cpu_kernels.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlproject.data.batches import BatchLoader, WindowSampler
from mlproject.model import linear
from mlproject.model.linear import Linear
from mlproject.training import device as device_module
from mlproject.training.device import configure_backends


@pytest.fixture
def recorded(monkeypatch):
    calls: dict[str, list] = {"precision": [], "keep_freed_memory": []}
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda p: calls["precision"].append(p))
    monkeypatch.setattr(device_module, "keep_freed_memory", lambda: calls["keep_freed_memory"].append(1) or True)
    return calls


def test_cuda_allows_tf32_matmuls_and_leaves_the_heap_alone(recorded):
    configure_backends(torch.device("cuda"))
    assert recorded == {"precision": ["high"], "keep_freed_memory": []}


def test_cpu_keeps_fp32_matmuls_exact_and_keeps_freed_memory(recorded):
    configure_backends(torch.device("cpu"))
    assert recorded == {"precision": [], "keep_freed_memory": [1]}


def _loader(pin: bool) -> BatchLoader:
    tokens = np.arange(200, dtype=np.uint16)
    return BatchLoader(tokens, WindowSampler(len(tokens), 8, 2, seed=0), prefetch=0, pin_memory=pin)


def test_batches_are_pinned_for_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(t.shape) or t)
    x, y = next(iter(_loader(pin=True)))
    assert pinned == [x.shape, y.shape]


def test_batches_are_not_pinned_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pytest.fail("pinned without CUDA"))
    next(iter(_loader(pin=True)))


def test_linear_off_the_cpu_is_nn_linear(monkeypatch):
    monkeypatch.setattr(linear, "onednn_linear", lambda *a: pytest.fail("oneDNN used off the CPU"))
    layer = Linear(8, 4, device="meta")
    assert layer(torch.empty(3, 8, device="meta")).shape == (3, 4)
