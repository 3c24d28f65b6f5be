"""The CPU speed paths give the results of the plain ones: oneDNN linear layers, fused AdamW,
kept heap memory, and a matmul probe that times every kernel the model uses."""

from __future__ import annotations

import resource
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mlproject.model import linear
from mlproject.model.gpt import GPT
from mlproject.model.linear import Linear
from mlproject.model.config import GPTConfig
from mlproject.training import throughput
from mlproject.training.config import TrainConfig
from mlproject.training.device import keep_freed_memory
from mlproject.training.optim import build_optimizer, resolve_recipe

needs_onednn = pytest.mark.skipif(linear.ONEDNN_INNER_PRODUCT is None, reason="this torch build has no oneDNN on x86")
# oneDNN has bf16 kernels only for AVX-512 CPUs: on an AVX2-only CPU the bf16 paths are nn.Linear's
# (test_bf16_falls_back_to_nn_linear_where_onednn_has_no_bf16_kernels checks that everywhere).
needs_onednn_bf16 = pytest.mark.skipif(not linear.onednn_bf16_works(), reason="oneDNN has no bf16 kernels for this CPU")


def _linear_pair(bias: bool) -> tuple[Linear, torch.nn.Linear]:
    torch.manual_seed(0)
    ours = Linear(24, 40, bias=bias)
    plain = torch.nn.Linear(24, 40, bias=bias)
    plain.load_state_dict(ours.state_dict())
    return ours, plain


@pytest.fixture
def fp32_on_onednn(monkeypatch):
    """fp32 on oneDNN whatever this CPU's vendor (on Intel CPUs Linear leaves fp32 to MKL)."""
    monkeypatch.setattr(linear, "FP32_ON_ONEDNN", True)


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_matches_nn_linear_in_forward_and_all_gradients(fp32_on_onednn, monkeypatch, bias):
    calls: list[int] = []
    real = linear.onednn_linear
    monkeypatch.setattr(linear, "onednn_linear", lambda *a: calls.append(1) or real(*a))
    ours, plain = _linear_pair(bias)
    x = torch.randn(3, 5, 24)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(3, 5, 40)
    ya, yb = ours(xa), plain(xb)
    ya.backward(grad)
    yb.backward(grad)
    assert torch.allclose(ya, yb, atol=1e-5)
    assert torch.allclose(xa.grad, xb.grad, atol=1e-5)
    assert torch.allclose(ours.weight.grad, plain.weight.grad, atol=1e-5)
    if bias:
        assert torch.allclose(ours.bias.grad, plain.bias.grad, atol=1e-5)
    assert len(calls) == 3  # the oneDNN path was the one compared


@pytest.mark.parametrize(("vendor", "expected"), [("AuthenticAMD", True), ("GenuineIntel", False), ("", True)])
def test_fp32_goes_to_onednn_but_on_intel_cpus(tmp_path, vendor, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: Some CPU\n\n" if vendor else "processor\t: 0\n")
    assert linear.cpu_vendor(str(cpuinfo)) == vendor
    assert linear.fp32_on_onednn(linear.cpu_vendor(str(cpuinfo))) is (expected and linear.ONEDNN_INNER_PRODUCT is not None)
    assert linear.cpu_vendor(str(tmp_path / "absent")) == ""


def test_fp32_linear_on_an_intel_cpu_is_nn_linear(monkeypatch):
    monkeypatch.setattr(linear, "FP32_ON_ONEDNN", False)
    monkeypatch.setattr(linear, "onednn_linear", lambda *a: pytest.fail("oneDNN used for fp32 on an Intel CPU"))
    ours, plain = _linear_pair(bias=True)
    x = torch.randn(2, 24)
    ours(x.clone().requires_grad_()).sum().backward()
    assert torch.equal(ours(x), plain(x))
    assert torch.equal(linear.matmul_t(x, ours.weight), x @ ours.weight.t())


@needs_onednn
def test_onednn_linear_runs_on_fp32_cpu_tensors(fp32_on_onednn, monkeypatch):
    calls = []
    monkeypatch.setattr(linear, "onednn_linear", lambda *a: calls.append(1) or F.linear(*a))
    ours, _ = _linear_pair(bias=True)
    ours(torch.randn(2, 24, requires_grad=True)).sum().backward()
    assert len(calls) == 3  # forward, input gradient, weight gradient
    calls.clear()
    ours(torch.randn(2, 24)).sum().backward()
    assert len(calls) == 2  # no input gradient for an input that needs none


@pytest.mark.parametrize("bias", [True, False])
def test_linear_under_cpu_autocast_computes_in_bf16_like_nn_linear(bias):
    ours, plain = _linear_pair(bias)
    x = torch.randn(3, 5, 24)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(3, 5, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, yb = ours(xa), plain(xb)
    assert ya.dtype == yb.dtype == torch.bfloat16
    ya.backward(grad.bfloat16())
    yb.backward(grad.bfloat16())
    # The fp32 master weights get fp32 gradients; values agree up to bf16 rounding (8-bit mantissa).
    assert ours.weight.grad.dtype == xa.grad.dtype == torch.float32
    tol = {"atol": 0.05, "rtol": 0.02}
    assert torch.allclose(ya.float(), yb.float(), **tol)
    assert torch.allclose(xa.grad, xb.grad, **tol)
    assert torch.allclose(ours.weight.grad, plain.weight.grad, **tol)
    if bias:
        assert ours.bias.grad.dtype == torch.float32
        assert torch.allclose(ours.bias.grad, plain.bias.grad, **tol)


@needs_onednn_bf16
def test_linear_under_cpu_bf16_autocast_runs_on_onednn_in_bf16(monkeypatch):
    dtypes = []
    monkeypatch.setattr(linear, "onednn_linear", lambda *a: dtypes.append((a[0].dtype, a[1].dtype)) or F.linear(*a))
    ours, _ = _linear_pair(bias=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ours(torch.randn(2, 24, requires_grad=True))
    y.float().sum().backward()
    assert dtypes == [(torch.bfloat16, torch.bfloat16)] * 3  # forward, input gradient, weight gradient


@needs_onednn_bf16
def test_linear_of_a_bf16_model_runs_on_onednn(monkeypatch):
    calls = []
    monkeypatch.setattr(linear, "onednn_linear", lambda *a: calls.append(a[0].dtype) or F.linear(*a))
    ours, plain = _linear_pair(bias=True)
    x = torch.randn(2, 24).bfloat16()
    with torch.no_grad():
        assert torch.allclose(ours.bfloat16()(x).float(), plain.bfloat16()(x).float(), atol=0.05, rtol=0.02)
    assert calls == [torch.bfloat16]


@needs_onednn
def test_bf16_falls_back_to_nn_linear_where_onednn_has_no_bf16_kernels(fp32_on_onednn, monkeypatch):
    calls = []
    monkeypatch.setattr(linear, "onednn_bf16_works", lambda: False)
    monkeypatch.setattr(linear, "onednn_linear", lambda *a: calls.append(a[0].dtype) or F.linear(*a))
    ours, plain = _linear_pair(bias=True)
    x = torch.randn(2, 24)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_plain = ours(x), plain(x)
    assert y.dtype == torch.bfloat16 and torch.equal(y, y_plain)
    with torch.no_grad():
        assert torch.equal(ours.bfloat16()(x.bfloat16()), plain.bfloat16()(x.bfloat16()))
        ours.float()(x)  # fp32 still runs on oneDNN
    assert calls == [torch.float32]


def test_the_bf16_probe_agrees_with_the_kernel():
    if linear.ONEDNN_INNER_PRODUCT is None:
        assert not linear.onednn_bf16_works()
        return
    one = torch.ones(1, 1, dtype=torch.bfloat16)
    try:
        linear.ONEDNN_INNER_PRODUCT(one, one, None, "none", [], "")
        works = True
    except RuntimeError:
        works = False
    assert linear.onednn_bf16_works() is works


def test_linear_in_float64_is_nn_linear():
    ours, plain = _linear_pair(bias=True)
    x = torch.randn(2, 24, dtype=torch.float64)
    assert torch.equal(ours.double()(x), plain.double()(x))


@needs_onednn
def test_gpt_training_step_matches_plain_matmuls(fp32_on_onednn, monkeypatch):
    cfg = GPTConfig(preset=None, n_layer=2, n_head=2, d_model=32, block_size=16, vocab_size=128)
    idx, targets = torch.randint(0, 128, (2, 2, 16))

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(0)
        model = GPT(cfg)
        _, loss = model(idx, targets)
        loss.backward()
        return loss, [p.grad for p in model.parameters()]

    loss, grads = loss_and_grads()
    monkeypatch.setattr(linear, "ONEDNN_INNER_PRODUCT", None)  # every Linear becomes F.linear
    plain_loss, plain_grads = loss_and_grads()
    assert torch.allclose(loss, plain_loss, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, plain_grads))


def _optimizer_kwargs(monkeypatch, devices: list[str]) -> dict:
    seen: dict = {}
    monkeypatch.setattr(torch.optim, "AdamW", lambda groups, **kwargs: seen.update(kwargs) or kwargs)
    params = [SimpleNamespace(device=torch.device(d)) for d in devices]
    model = SimpleNamespace(optim_groups=lambda wd: [{"params": params, "weight_decay": wd}])
    build_optimizer(model, resolve_recipe(TrainConfig(), "gpt2"))
    return seen


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_fused_adamw_is_requested_on_cuda_and_cpu(monkeypatch, device):
    assert _optimizer_kwargs(monkeypatch, [device, device])["fused"] is True


@pytest.mark.parametrize("devices", [["mps"], ["cpu", "cuda"]])
def test_fused_adamw_is_left_to_torch_elsewhere(monkeypatch, devices):
    assert _optimizer_kwargs(monkeypatch, devices)["fused"] is None


def test_fused_adamw_step_equals_the_default_step():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(8, 4))
    b = torch.nn.Parameter(a.detach().clone())
    fused = torch.optim.AdamW([a], lr=1e-2, fused=True)
    default = torch.optim.AdamW([b], lr=1e-2)
    for _ in range(3):
        grad = torch.randn(8, 4)
        a.grad, b.grad = grad.clone(), grad.clone()
        fused.step()
        default.step()
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_freed_large_blocks_are_reused_without_page_faults():
    if not keep_freed_memory():
        pytest.skip("the C library is not glibc")
    n = 64 * 2**18  # 64 MiB of float32: above glibc's largest default mmap threshold (32 MiB)
    torch.ones(n).sum()  # the heap grows once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        torch.ones(n).sum()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < n * 4 // 4096 // 4  # a fresh mapping would fault on each of its 16384 pages, every time


def test_probe_times_onednn_for_fp32_and_bf16_on_cpu_only():
    # Linear runs fp32 on oneDNN, and bf16 where oneDNN has bf16 kernels for this CPU
    for dtype, on_onednn in ((torch.float32, linear.ONEDNN_INNER_PRODUCT is not None),
                             (torch.bfloat16, linear.onednn_bf16_works())):
        names = {k.__name__ for k in throughput._matmuls(torch.device("cpu"), dtype)}
        assert {"matmul", "linear"} <= names  # nn.Linear's own kernel is timed too
        assert ("onednn_linear" in names) == on_onednn
    assert [k.__name__ for k in throughput._matmuls(torch.device("cpu"), torch.float16)] == ["matmul", "linear"]
