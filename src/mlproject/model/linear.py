"""`Linear`: nn.Linear whose CPU matmuls (forward and backward) run on oneDNN: bf16, and fp32
but on Intel CPUs (whose MKL, PyTorch's own fp32 kernel, is as fast there).

A kernel choice beside the model, not part of its maths: the model file builds its
projections from this class and stays readable; results equal nn.Linear's up to fp32
rounding, and under bf16 autocast nn.Linear's under autocast up to bf16 rounding
(tests/performance/test_cpu_kernels.py).
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from mlproject.cpuinfo import CPUINFO, cpu_fields


def _onednn_inner_product() -> Callable[..., torch.Tensor] | None:
    """oneDNN's inner product on dense CPU tensors, or None where this torch build lacks it."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


ONEDNN_INNER_PRODUCT = _onednn_inner_product()


def cpu_vendor(cpuinfo: str = CPUINFO) -> str:
    """The CPU's vendor id ("GenuineIntel", "AuthenticAMD"), or "" where the system does not say."""
    return (cpu_fields(cpuinfo) or {}).get("vendor_id", "")


def fp32_on_onednn(vendor: str) -> bool:
    """Whether fp32 CPU matmuls go to oneDNN rather than PyTorch's own (MKL) on this CPU vendor.

    MKL is Intel's library: on an Intel Xeon with AVX-512 and AMX its fp32 kernels equal or beat
    oneDNN's at every shape of the model (a nano step's projections 2-10% faster, a batch-1
    decoding step's 2x: benchmarks/README.md). On AMD CPUs (AVX-512 ones included) they reach a
    quarter to a half of oneDNN's rate. So oneDNN everywhere but on Intel.
    """
    return ONEDNN_INNER_PRODUCT is not None and vendor != "GenuineIntel"


FP32_ON_ONEDNN = fp32_on_onednn(cpu_vendor())


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias on oneDNN: x (..., in) and weight (out, in), each with a dense last dim."""
    assert ONEDNN_INNER_PRODUCT is not None
    return ONEDNN_INNER_PRODUCT(x, weight, bias, "none", [], "")


@functools.cache
def onednn_bf16_works() -> bool:
    """Whether oneDNN's bf16 inner product runs on this CPU (probed once, on a 1x1 product).

    oneDNN builds its bf16 kernels only for CPUs with AVX-512 (AVX512_BF16/AMX natively, AVX512
    emulated); on an AVX2-only CPU it has none and refuses the primitive. There, bf16 goes
    through nn.Linear under autocast, which PyTorch computes with its reference kernels.
    """
    if ONEDNN_INNER_PRODUCT is None:
        return False
    try:
        one = torch.ones(1, 1, dtype=torch.bfloat16)
        ONEDNN_INNER_PRODUCT(one, one, None, "none", [], "")
    except RuntimeError:
        return False
    return True


def onednn_runs(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether matmuls of `dtype` on `device` go to oneDNN (`Linear`, `matmul_t`): CPU tensors
    outside torch.compile, fp32 where `FP32_ON_ONEDNN`, bf16 where oneDNN has bf16 kernels."""
    return (ONEDNN_INNER_PRODUCT is not None and device.type == "cpu" and not torch.compiler.is_compiling()
            and ((dtype == torch.float32 and FP32_ON_ONEDNN) or (dtype == torch.bfloat16 and onednn_bf16_works())))


def matmul_t(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T (no autograd) for 2-D x (N, in) and weight (out, in) of one dtype: oneDNN
    where it runs this dtype on this device, torch's matmul elsewhere. oneDNN reads a strided
    weight but copies a strided input, so callers pass the wider operand as the weight."""
    if onednn_runs(x.dtype, x.device):
        return onednn_linear(x.contiguous(), weight)
    return x @ weight.t()


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b with the forward and both backward matmuls on oneDNN."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = x.contiguous()  # a no-op for every input in this model but the logits="last" slice
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_2d, x_2d = grad.view(-1, grad.size(-1)), x.view(-1, x.size(-1))  # (N, out), (N, in)
        grad_x = onednn_linear(grad, weight.t()) if ctx.needs_input_grad[0] else None  # (..., in)
        grad_w = None
        if ctx.needs_input_grad[1]:
            # grad^T @ x sums over the N rows, so both operands go in transposed. oneDNN reads its
            # weight operand in any layout but needs a dense input (a copy), so the wider of the
            # two goes in as the weight: for the output layer, the (N, V) logits gradient.
            if grad_2d.size(1) >= x_2d.size(1):
                grad_w = onednn_linear(x_2d.t(), grad_2d.t()).t()  # (in, out) -> (out, in)
            else:
                grad_w = onednn_linear(grad_2d.t(), x_2d.t())      # (out, in)
        grad_b = grad_2d.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def _bf16(t: torch.Tensor) -> torch.Tensor:
    # The fp32 parameter stays the master copy: the cast is differentiable, so its gradient
    # arrives in fp32 (as under autocast, which also casts weights on every forward).
    return t if t.dtype == torch.bfloat16 else t.to(torch.bfloat16)


class Linear(nn.Linear):
    """nn.Linear whose CPU matmuls, forward and backward, run on oneDNN: fp32 (but on Intel CPUs), and bf16 autocast.

    PyTorch sends fp32 CPU matmuls to MKL, whose kernels on AMD CPUs (AVX-512 ones included)
    reach a quarter to a half of the FLOP rate of oneDNN's, which are picked by instruction set:
    at GPT sizes a training step gets 1.6x faster (benchmarks/README.md). On Intel CPUs MKL is
    as fast or faster, and fp32 stays nn.Linear's (`fp32_on_onednn`). Under CPU autocast to
    bf16 the inputs, weight and bias are cast to bf16 (what autocast does for nn.Linear) and the
    three matmuls run on oneDNN's bf16 inner product (AVX512_BF16 / AMX where the CPU has them),
    as do those of a model cast to bf16 (inference). Elsewhere (GPUs,
    torch.compile, other dtypes, builds without oneDNN, bf16 on CPUs without oneDNN bf16 kernels)
    it is nn.Linear.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled("cpu"):
            if x.dtype == self.weight.dtype and onednn_runs(x.dtype, x.device):
                return _OneDNNLinear.apply(x, self.weight, self.bias)
        elif (torch.get_autocast_dtype("cpu") == torch.bfloat16 and self.weight.dtype == torch.float32
              and onednn_runs(torch.bfloat16, x.device)):
            bias = None if self.bias is None else _bf16(self.bias)
            with torch.autocast("cpu", enabled=False):  # the casts are explicit above
                return _OneDNNLinear.apply(_bf16(x), _bf16(self.weight), bias)
        return F.linear(x, self.weight, self.bias)
