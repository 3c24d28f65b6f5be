"""The output layer and the cross-entropy loss in one pass, chunked over rows.

`F.cross_entropy(lm_head(x))` materialises the (N, V) logits, their fp32 copy under autocast,
the log-softmax and, in the backward, the (N, V) gradient: at batch 8, block 256, vocab 16384
that is 128 MiB per fp32 tensor, written and read several times, a sixth of a CPU training
step. Here the rows go through in chunks that fit in the cache, and since the loss is the
last node of the graph its gradients are known in the forward already: each chunk's logits
are turned at once into the chunk's share of grad x and grad W (Liger-Kernel's fused linear
cross-entropy, Hsu et al., 2024). No (N, V) tensor ever exists; the backward only scales
the stored gradients by the incoming one.

Numerics follow the reference (tests/model/test_loss.py): logits in the matmul's dtype (bf16
under bf16 autocast, as the autocast `Linear` gives them), softmax and loss in fp32, the
logits' gradient cast to the matmul's dtype for the two gradient matmuls, as autocast's
backward does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mlproject.model.linear import matmul_t, onednn_runs

CHUNK_ROWS = 512  # (512, 16384) fp32 logits: 32 MiB, about one L3 cache of a server core complex


def _matmul_dtype(weight: torch.Tensor) -> torch.dtype:
    """bf16/fp16 under autocast on the weight's device, else the weight's own dtype."""
    device = weight.device.type
    if torch.is_autocast_enabled(device) and weight.dtype == torch.float32:
        return torch.get_autocast_dtype(device)
    return weight.dtype


def _chunk(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, label_smoothing: float,
           scratch: torch.Tensor, grad_out: torch.Tensor | None, torch_gemm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss (fp32) and d(summed loss)/d(logits) of one chunk: x (n, C), targets (n,).

    The gradient is `grad_out`'s first n rows (the matmul's dtype, bf16 under autocast), or
    `scratch`'s where the matmul runs in fp32; `torch_gemm`: fp32 on torch's GEMM, which writes
    the logits straight into `scratch`. `scratch` (>= n, V) fp32 serves every chunk of a step:
    the logits go in and become their softmax in place, then softmax - one-hot: one pass where
    log_softmax + exp took two, and no new (n, V) tensor per chunk. The loss is -log p_t from
    the softmax at the target; where p_t underflows fp32 (a logit gap over ~87) those rows'
    log-sum-exp is recomputed instead.

    Rows whose target is -100 count for nothing in the loss; their gradient rows are left as
    they are, and the caller zeroes what they would contribute through the small (n, C) sides.
    Nor is the gradient divided by the number of valid rows: the backward scales the two small
    results instead of every (n, V) chunk (each pass over a chunk costs about what a nano-sized
    matmul does).
    """
    probs = scratch[:x.size(0)]                                       # (n, V) fp32
    if torch_gemm:
        torch.mm(x, weight.t(), out=probs)                            # fp32 on torch's GEMM: in place
    else:
        probs.copy_(matmul_t(x, weight))                              # bf16 logits: one cast, as autocast's
    valid = targets != -100                                           # (n,)
    safe = targets.clamp(min=0).unsqueeze(1)                          # (n, 1): ignored rows pick 0
    logit_t = probs.gather(1, safe)                                   # (n, 1)
    mean_logit = probs.mean(dim=-1, keepdim=True) if label_smoothing > 0 else None
    torch.softmax(probs, dim=-1, out=probs)                           # in place: (n, V)
    p_t = probs.gather(1, safe)                                       # (n, 1)
    lse = logit_t - p_t.log()                                         # log-sum-exp of each row's logits
    underflow = (p_t.squeeze(1) < torch.finfo(torch.float32).tiny) & valid
    if underflow.any():  # rare: recompute those rows' logits
        lse[underflow] = torch.logsumexp(matmul_t(x[underflow], weight).float(), dim=-1, keepdim=True)
    nll = lse - logit_t                                               # (n, 1): -log p_t
    if label_smoothing > 0:  # the uniform part: -mean_v log p_v = lse - mean_v logit_v
        nll = (1 - label_smoothing) * nll + label_smoothing * (lse - mean_logit)
        probs.sub_(label_smoothing / probs.size(-1))
    loss = nll.squeeze(1).masked_fill(~valid, 0.0).sum()
    # in fp32, then one cast: p - 1 is rounded once, as the reference's autocast backward does
    # (torch's scatter_ into a bf16 tensor is also 4 ms per chunk, its fp32 scatter_add_ ~0)
    probs.scatter_add_(1, safe, torch.full_like(p_t, -(1 - label_smoothing)))
    return loss, probs if grad_out is None else grad_out[:x.size(0)].copy_(probs)


class _LinearCrossEntropy(torch.autograd.Function):
    """mean cross-entropy of (x W^T) against targets, gradients computed in the forward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, label_smoothing: float,
                chunk_rows: int) -> torch.Tensor:
        dtype = _matmul_dtype(weight)
        with torch.autocast(x.device.type, enabled=False):  # the casts are explicit here
            xm, wm = x.to(dtype), weight.to(dtype)               # (N, C), (V, C): one cast per step
            valid = (targets != -100).unsqueeze(1)                # (N, 1)
            n_valid = valid.sum().clamp(min=1).float()
            x_valid = xm * valid                                 # (N, C): ignored rows add nothing to grad W
            grad_x = torch.empty_like(xm)                        # (N, C)
            # W's gradient in fp32, summed over the chunks in the layout each kernel writes fastest:
            # torch's GEMM takes both transposes as flags and adds into (V, C) in place; oneDNN needs
            # a dense input, so the wide (n, V) gradient goes in as its weight and gives (C, V)
            torch_gemm = dtype == torch.float32 and not onednn_runs(dtype, x.device)
            V, C = weight.shape
            grad_w = torch.empty(V, C, device=x.device) if torch_gemm else torch.empty(C, V, device=x.device).t()
            loss = torch.zeros((), device=x.device)
            scratch = torch.empty(min(chunk_rows, x.size(0)), V, device=x.device)  # (n, V) fp32
            grad_out = None if dtype == torch.float32 else torch.empty_like(scratch, dtype=dtype)  # (n, V)
            for start in range(0, x.size(0), chunk_rows):
                rows = slice(start, start + chunk_rows)
                chunk_loss, grad = _chunk(xm[rows], wm, targets[rows], label_smoothing, scratch, grad_out, torch_gemm)
                loss += chunk_loss
                first = start == 0  # the first chunk writes grad_w, the others add to it (no zero pass)
                if torch_gemm:
                    torch.mm(grad, wm, out=grad_x[rows])         # (n, C)
                    grad_w.addmm_(grad.t(), x_valid[rows], beta=0 if first else 1)  # (V, C): grad^T x
                else:
                    grad_x[rows] = matmul_t(grad, wm.t())        # (n, C)
                    part = matmul_t(x_valid[rows].t(), grad.t())  # (C, V)
                    if first:
                        grad_w.t().copy_(part)
                    else:
                        grad_w.t().add_(part)
            if x.size(0) == 0:  # no chunk wrote it
                grad_w.zero_()
            grad_x.mul_(valid)                                   # ignored rows get no gradient
        ctx.save_for_backward(grad_x, grad_w, n_valid)
        ctx.dtypes = (x.dtype, weight.dtype)
        return loss / n_valid

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_x, grad_w, n_valid = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        scale = grad_loss / n_valid  # the mean over the valid rows, and the upstream gradient
        grad_weight = None
        if ctx.needs_input_grad[1]:  # scaled, cast and made dense (V, C) in one pass
            grad_weight = torch.mul(grad_w, scale, out=torch.empty(grad_w.shape, dtype=w_dtype, device=grad_w.device))
        return (grad_x.to(x_dtype) * scale if ctx.needs_input_grad[0] else None, grad_weight, None, None, None)


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         label_smoothing: float = 0.0, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """F.cross_entropy(x @ weight.T, targets, ignore_index=-100, label_smoothing=...) (the mean)
    without materialising the (N, V) logits: x (N, C), weight (V, C), targets (N,)."""
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        with torch.no_grad():  # evaluation: the same chunks, no gradients to precompute
            return _loss_only(x, weight, targets, label_smoothing, chunk_rows)
    return _LinearCrossEntropy.apply(x, weight, targets, label_smoothing, chunk_rows)


def _loss_only(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, label_smoothing: float,
               chunk_rows: int) -> torch.Tensor:
    dtype = _matmul_dtype(weight)
    with torch.autocast(x.device.type, enabled=False):
        xm, wm = x.to(dtype), weight.to(dtype)
        total = torch.zeros((), device=x.device)
        for start in range(0, x.size(0), chunk_rows):
            logits = matmul_t(xm[start:start + chunk_rows], wm).float()  # (n, V)
            total += F.cross_entropy(logits, targets[start:start + chunk_rows], ignore_index=-100,
                                     label_smoothing=label_smoothing, reduction="sum")
    return total / (targets != -100).sum().clamp(min=1)
