"""The chunked output layer + cross-entropy (`linear_cross_entropy`, GPT's logits="none") gives
the loss and every gradient of the reference path: F.cross_entropy on the full logits."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from mlproject.errors import MlprojectError
from mlproject.model import linear
from mlproject.model.config import GPTConfig
from mlproject.model.gpt import GPT
from mlproject.model.loss import linear_cross_entropy


def _tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(preset=None, n_layer=2, n_head=2, d_model=64, block_size=32, vocab_size=500, dropout=0.0))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 500, (3, 32), generator=g), torch.randint(0, 500, (3, 32), generator=g)
    y[0, :7] = -100  # ignored positions
    return x, y


def _loss_and_grads(model: GPT, logits: str, bf16: bool, label_smoothing: float) -> tuple[float, dict]:
    x, y = _batch()
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        _, loss = model(x, y, label_smoothing=label_smoothing, logits=logits)
    (3 * loss).backward()  # an upstream gradient other than 1 reaches both paths alike
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("fp32_on_onednn", [True, False], ids=["onednn", "torch-gemm"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_fused_loss_and_gradients_equal_the_full_logits_path_in_fp32(monkeypatch, label_smoothing, fp32_on_onednn):
    # both fp32 kernels of the chunk loop: oneDNN's (AMD CPUs), and torch's GEMM written in place (Intel CPUs)
    monkeypatch.setattr(linear, "FP32_ON_ONEDNN", fp32_on_onednn and linear.ONEDNN_INNER_PRODUCT is not None)
    model = _tiny_gpt()
    ref_loss, ref_grads = _loss_and_grads(model, "all", False, label_smoothing)
    loss, grads = _loss_and_grads(model, "none", False, label_smoothing)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.skipif(not linear.onednn_bf16_works(), reason="bf16 autocast matmuls are emulated on this CPU")
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_fused_loss_under_bf16_autocast_matches_autocast_cross_entropy(label_smoothing):
    model = _tiny_gpt()
    ref_loss, ref_grads = _loss_and_grads(model, "all", True, label_smoothing)
    loss, grads = _loss_and_grads(model, "none", True, label_smoothing)
    assert loss == pytest.approx(ref_loss, rel=1e-3)
    for name, g in grads.items():  # bf16 rounding of the logits' gradient: relative to each tensor's scale
        assert (g - ref_grads[name]).abs().max() <= 2e-2 * ref_grads[name].abs().max() + 1e-7, name


@pytest.mark.parametrize("fp32_on_onednn", [True, False], ids=["onednn", "torch-gemm"])
@pytest.mark.parametrize("chunk_rows", [1, 5, 64, 1000])
def test_chunk_size_does_not_change_the_result(monkeypatch, chunk_rows, fp32_on_onednn):
    monkeypatch.setattr(linear, "FP32_ON_ONEDNN", fp32_on_onednn and linear.ONEDNN_INNER_PRODUCT is not None)
    torch.manual_seed(0)
    x = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    y = torch.randint(0, 50, (37,))
    y[3] = -100
    loss = linear_cross_entropy(x, w, y, chunk_rows=chunk_rows)
    loss.backward()
    x_ref, w_ref = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = F.cross_entropy(x_ref @ w_ref.t(), y, ignore_index=-100)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(w.grad, w_ref.grad)


def test_without_gradients_the_loss_is_the_same():
    model = _tiny_gpt()
    x, y = _batch()
    with torch.no_grad():
        _, ref = model(x, y)
        _, loss = model(x, y, logits="none")
    torch.testing.assert_close(loss, ref)


def test_logits_none_returns_no_logits_and_needs_targets():
    model = _tiny_gpt()
    x, y = _batch()
    logits, loss = model(x, y, logits="none")
    assert logits is None and loss.ndim == 0
    with pytest.raises(MlprojectError, match="logits='none' needs targets"):
        model(x, logits="none")


@pytest.mark.skipif(not linear.onednn_bf16_works(), reason="bf16 autocast matmuls are emulated on this CPU")
def test_bf16_cpu_attention_by_matmuls_matches_the_sdpa_kernel_in_fp32():
    torch.manual_seed(0)
    cfg = GPTConfig(preset=None, n_layer=2, n_head=2, d_model=64, block_size=32, vocab_size=500, dropout=0.0)
    bf16_model, fp32_model = GPT(cfg).to(torch.bfloat16), GPT(cfg)
    fp32_model.load_state_dict({k: v.float() for k, v in bf16_model.state_dict().items()})
    x, _ = _batch()
    with torch.no_grad():
        fast, _ = bf16_model(x)  # CPU bf16: the explicit-matmul attention
        ref, _ = fp32_model(x)   # fp32: torch's SDPA kernel, same (bf16-representable) weights
    assert (fast.float() - ref).abs().max() <= 0.05 * ref.abs().max()


@pytest.mark.parametrize("fp32_on_onednn", [True, False], ids=["onednn", "torch-gemm"])
def test_a_target_whose_softmax_underflows_still_gets_the_exact_loss(monkeypatch, fp32_on_onednn):
    # The loss is read from the softmax at the target, -log p_t; a logit gap over ~87 makes p_t
    # 0 in fp32, and those rows take their log-sum-exp instead (the loss stays finite and exact).
    monkeypatch.setattr(linear, "FP32_ON_ONEDNN", fp32_on_onednn and linear.ONEDNN_INNER_PRODUCT is not None)
    torch.manual_seed(0)
    x = torch.randn(6, 8)
    x[2] *= 60.0  # row 2: logits hundreds apart
    x.requires_grad_()
    w = torch.randn(20, 8, requires_grad=True)
    logits = (x @ w.t()).detach()
    y = torch.randint(0, 20, (6,))
    y[2] = int(logits[2].argmin())  # its target's probability underflows fp32
    assert torch.softmax(logits[2], -1)[y[2]] == 0
    loss = linear_cross_entropy(x, w, y, chunk_rows=4)
    loss.backward()
    x_ref, w_ref = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = F.cross_entropy(x_ref @ w_ref.t(), y)
    ref.backward()
    assert torch.isfinite(loss) and loss.item() > 10
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(w.grad, w_ref.grad)


@pytest.mark.parametrize("fp32_on_onednn", [True, False], ids=["onednn", "torch-gemm"])
@pytest.mark.parametrize("rows", [0, 6])
def test_no_valid_target_gives_zero_loss_and_zero_gradients(monkeypatch, fp32_on_onednn, rows):
    # W's gradient buffer is written by the first chunk, not zeroed first: with no chunk, or only
    # ignored rows, it must still come back as zeros
    monkeypatch.setattr(linear, "FP32_ON_ONEDNN", fp32_on_onednn and linear.ONEDNN_INNER_PRODUCT is not None)
    x = torch.randn(rows, 8, requires_grad=True)
    w = torch.randn(20, 8, requires_grad=True)
    loss = linear_cross_entropy(x, w, torch.full((rows,), -100), chunk_rows=4)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(w.grad) == 0 and torch.count_nonzero(x.grad) == 0
