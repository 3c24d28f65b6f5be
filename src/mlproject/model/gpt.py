"""The GPT model: GPT-2 and GPT-3 decoder-only transformers and their architecture variants.

One file, nanoGPT style: `CausalSelfAttention`, `MLP` / `SwiGLUMLP`, `Block`, `GPT`, plus the
`KVCache` used by generation. Parameter names follow GPT-2 (`transformer.wte`, `transformer.h.0
.attn.c_attn`, ...) so pretrained weights map over by name (see `mlproject.model.hf`). The
projections are `mlproject.model.linear.Linear`: nn.Linear with faster fp32 CPU matmuls.

Shapes: B batch, T new tokens, S attended keys (cached + new), C = d_model, nh heads,
hs = head dim, V vocabulary.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mlproject.errors import MlprojectError
from mlproject.model.config import GPTConfig
from mlproject.model.linear import Linear
from mlproject.model.loss import linear_cross_entropy


def causal_mask(start: int, T: int, window: int | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (T, start + T) mask, True where a query may attend a key.

    Queries sit at absolute positions start..start+T-1, keys at 0..start+T-1. A query attends
    itself and earlier keys; with a `window` only the last `window` of them (itself included),
    the locally banded pattern of the Sparse Transformer (Child et al., 2019).
    """
    i = torch.arange(start, start + T, device=device).unsqueeze(1)  # (T, 1) query positions
    j = torch.arange(start + T, device=device).unsqueeze(0)         # (1, S) key positions
    mask = j <= i
    if window is not None:
        mask = mask & (i - j < window)
    return mask


def rope_tables(head_dim: int, max_len: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (max_len, head_dim) of rotary position embeddings (Su et al., 2021).

    Frequency k rotates the pair of channels (k, k + head_dim/2): the split-halves layout of
    Hugging Face's Llama, so its q/k projection weights load without a permutation.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(max_len, dtype=torch.int64).float(), inv_freq)  # (max_len, hs/2)
    emb = torch.cat((freqs, freqs), dim=-1)                                          # (max_len, hs)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, nh, T, hs) queries or keys by the (T, hs) tables of their positions."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # float32 tables, bf16 activations under autocast
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)  # multiplies each (x1, x2) pair by i
    return x * cos + rotated * sin


class KVCache:
    """Keys and values of the tokens processed so far, per layer, preallocated to `max_len`.

    `GPT.forward(..., kv_cache=cache)` reads the new tokens' positions from `length`, stores
    their keys and values at `length...` and advances `length` by the number of new tokens.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, head_dim: int, max_len: int,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        shape = (batch_size, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, nh, T, hs) keys/values after the cached ones; return all (B, nh, S, hs)."""
        end = self.length + k.size(2)
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


def make_norm(config: GPTConfig) -> nn.Module:
    """LayerNorm (GPT-2/3) or RMSNorm (Zhang & Sennrich, 2019; no bias, no mean subtraction)."""
    if config.norm_type == "rmsnorm":
        return nn.RMSNorm(config.d_model, eps=config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused QKV projection.

    `mask` is a boolean (T, S) mask from `causal_mask`, or None for the plain causal pattern
    with T == S or a single new token (T == 1, which attends every cached key): then SDPA
    gets `is_causal` instead of a mask, so its flash kernels apply.
    """

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.banded = config.layer_is_banded(layer)
        self.n_head = config.n_head
        self.d_model = config.d_model
        self.impl = config.attention_impl
        self.dropout = config.dropout
        self.c_attn = Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.c_proj = Linear(config.d_model, config.d_model, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.residual_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.d_model, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer, k, v)  # (B, nh, S, hs)
        # bf16 on a CPU: explicit matmuls (oneDNN's bf16 GEMMs) and softmax beat the CPU flash
        # kernel, which runs bf16 slower than fp32 (benchmarks/README.md, "Where a bf16 step goes")
        if self.impl == "sdpa" and not (x.device.type == "cpu" and q.dtype == torch.bfloat16):
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                is_causal=mask is None and T > 1)
        else:
            att = (q * (1.0 / math.sqrt(k.size(-1)))) @ k.transpose(-2, -1)  # (B, nh, T, S)
            if mask is None and T > 1:
                mask = causal_mask(k.size(2) - T, T, device=x.device)
            if mask is not None:
                att = att.masked_fill(~mask, float("-inf"))
            att = self.attn_dropout(F.softmax(att, dim=-1))
            y = att @ v                                                      # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """GPT-2's feed-forward block: Linear, GELU (tanh approximation by default), Linear."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = Linear(config.d_model, config.mlp_hidden, bias=config.bias)
        self.c_proj = Linear(config.mlp_hidden, config.d_model, bias=config.bias)
        self.approximate = config.gelu_approximate
        self.dropout = nn.Dropout(config.residual_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate)))


class SwiGLUMLP(nn.Module):
    """SwiGLU feed-forward block (Shazeer, 2020): silu(x W_gate) * (x W_up), then W_down.

    The gate and up projections are fused in `c_fc` (gate rows first), `c_proj` is the down
    projection; the hidden size keeps the GELU MLP's parameter count (`GPTConfig.mlp_hidden`).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = Linear(config.d_model, 2 * config.mlp_hidden, bias=config.bias)
        self.c_proj = Linear(config.mlp_hidden, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.residual_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.c_fc(x).chunk(2, dim=-1)  # (B, T, hidden) each
        return self.dropout(self.c_proj(F.silu(gate) * up))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = make_norm(config)
        self.mlp = SwiGLUMLP(config) if config.mlp_type == "swiglu" else MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, rope, kv_cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only language model in the GPT-2 or GPT-3 architecture.

    GPT-2 (Radford et al., 2019): pre-norm blocks with a final LayerNorm, learned absolute
    positions, GELU MLP (tanh approximation) with 4x expansion, token embedding tied to the
    output head, weights drawn from normal(0, 0.02) with the residual projections (`c_proj`)
    scaled by 1/sqrt(2 * n_layer) because each block adds two of them to the residual stream.
    Context 1024.

    GPT-3 (Brown et al., 2020, section 2.1) keeps that architecture "including the modified
    initialization, pre-normalization, and reversible tokenization" and changes two things:
    - attention alternates between dense and locally banded sparse layers, as in the Sparse
      Transformer (Child et al., 2019): here the odd layers (`GPTConfig.layer_is_banded`) let
      each token attend only the last `attention_window` positions, itself included (the paper
      does not publish the band width: a config field, by default isqrt(block_size) as in the
      Sparse Transformer, see `config.default_window`);
    - the context is 2048 tokens.
    `attention_pattern="dense"` turns the banded layers off.

    Variants (config fields): RMSNorm, SwiGLU MLP, rotary or no positions, manual or SDPA
    attention, gradient checkpointing, dropout (and a separate residual-branch rate,
    `resid_dropout`), bias, MLP width, exact or tanh GELU, untied embeddings.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        config = config.resolved()
        self.config = config
        modules = dict(wte=nn.Embedding(config.vocab_size, config.d_model))
        if config.pos_encoding == "learned":
            modules["wpe"] = nn.Embedding(config.block_size, config.d_model)
        modules["drop"] = nn.Dropout(config.dropout)
        modules["h"] = nn.ModuleList([Block(config, layer) for layer in range(config.n_layer)])
        modules["ln_f"] = make_norm(config)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = Linear(config.d_model, config.vocab_size, bias=False)
        if config.pos_encoding == "rope":
            self.register_buffer("rope_cos", torch.empty(config.block_size, config.head_dim), persistent=False)
            self.register_buffer("rope_sin", torch.empty(config.block_size, config.head_dim), persistent=False)
        self.has_banded = any(config.layer_is_banded(layer) for layer in range(config.n_layer))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Draw fresh GPT-2 initial weights and fill the RoPE tables.

        The constructor calls it. A large model can be built on the meta device, placed with
        `to_empty(device=...)` and then initialised here, touching its memory only once
        (`to_empty` unties the embeddings; this ties them again).
        """
        self.tie_weights()
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if getattr(module, "bias", None) is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                module.reset_parameters()
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                # each block adds two residual branches: keep the stream's variance flat (GPT-2)
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))
        if self.config.pos_encoding == "rope":
            cos, sin = rope_tables(self.config.head_dim, self.config.block_size, self.config.rope_theta)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    def tie_weights(self) -> None:
        """Make the output head use the token embedding's tensor (with `tie_embeddings`).

        One tensor, not a copy: input and output embeddings train together (Press & Wolf,
        2017). Needed again after `to_empty` or `load_state_dict(..., assign=True)`.
        """
        if self.config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    # ------------------------------------------------------------------------- forward

    def _masks(self, start: int, T: int, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(dense, banded) attention masks for T new tokens after `start` cached ones.

        None means the plain causal pattern, which attention applies without a mask.
        """
        dense = None if start == 0 or T == 1 else causal_mask(start, T, device=device)
        if not self.has_banded or start + T <= self.config.attention_window:
            return dense, dense  # the band only binds beyond `attention_window` positions
        return dense, causal_mask(start, T, self.config.attention_window, device=device)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                label_smoothing: float = 0.0, kv_cache: KVCache | None = None,
                logits: Literal["all", "last", "none"] = "all") -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits (B, T, V) (or (B, 1, V) with logits="last") and the loss if `targets` given.

        idx, targets: (B, T) int64; targets equal to -100 are ignored. With a `kv_cache`, idx
        holds only the new tokens, at positions kv_cache.length onwards. logits="none" returns
        the loss alone (None for the logits), computed by `linear_cross_entropy` without ever
        holding the (B, T, V) logits: what training uses.
        """
        if logits not in ("all", "last", "none"):
            raise MlprojectError(f"logits={logits!r} is not supported; expected 'all', 'last' or 'none'")
        if targets is not None and logits == "last":
            raise MlprojectError("a loss needs logits='all' or 'none' (targets cover every position)")
        if targets is None and logits == "none":
            raise MlprojectError("logits='none' needs targets: it returns the loss alone")
        B, T = idx.size()
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise MlprojectError(f"sequence of {start + T} tokens exceeds block_size={self.config.block_size}")
        if kv_cache is not None and start + T > kv_cache.max_len:
            raise MlprojectError(f"KV cache of max_len={kv_cache.max_len} cannot hold {start + T} tokens")

        x = self.transformer.wte(idx)  # (B, T, C)
        if self.config.pos_encoding == "learned":
            x = x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device))  # (T, C) broadcast
        x = self.transformer.drop(x)
        rope = None
        if self.config.pos_encoding == "rope":
            rope = (self.rope_cos[start:start + T], self.rope_sin[start:start + T])  # (T, hs) each
        dense_mask, banded_mask = self._masks(start, T, idx.device)
        recompute = self.config.gradient_checkpointing and self.training and kv_cache is None
        for block in self.transformer.h:
            mask = banded_mask if block.attn.banded else dense_mask
            if recompute:
                x = checkpoint(block, x, mask, rope, use_reentrant=False)
            else:
                x = block(x, mask, rope, kv_cache)
        if kv_cache is not None:
            kv_cache.length = start + T
        x = self.transformer.ln_f(x)

        if logits == "none" and not torch.compiler.is_compiling():  # torch.compile fuses its own
            # the output layer and the loss in one chunked pass over the (B*T, C) rows
            return None, linear_cross_entropy(x.view(B * T, -1), self.lm_head.weight, targets.reshape(-1),
                                              label_smoothing=label_smoothing)
        if logits == "last":
            x = x[:, -1:, :]  # (B, 1, C): generation needs only the next-token distribution
        out = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(out.view(-1, out.size(-1)), targets.reshape(-1), ignore_index=-100,
                                   label_smoothing=label_smoothing)
        return (None if logits == "none" else out), loss

    def new_kv_cache(self, batch_size: int, max_len: int | None = None,
                     device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache for up to `max_len` (default block_size) positions, on the model's device/dtype."""
        max_len = self.config.block_size if max_len is None else max_len
        if not 0 < max_len <= self.config.block_size:
            raise MlprojectError(f"KV cache max_len={max_len} must be in [1, block_size={self.config.block_size}]")
        weight = self.lm_head.weight
        return KVCache(self.config.n_layer, batch_size, self.config.n_head, self.config.head_dim, max_len,
                       device=device or weight.device, dtype=dtype or weight.dtype)

    # ------------------------------------------------------------------------- accounting

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameter count (tied weights once); optionally without the wte/wpe lookup tables."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= sum(m.weight.numel() for name, m in self.transformer.items() if name in ("wte", "wpe"))
        return n

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward) at the full context, 6N + 12*L*H*Q*T.

        PaLM's convention (Chowdhery et al., 2022, appendix B): 6N for the weight matmuls, with
        N the non-embedding parameters plus the output head (a real matmul per token, counted
        once even when tied to wte), and 12*H*Q*T per layer for the attention scores and the
        weighted values, T = block_size without discounting the causal mask. A banded layer
        attends min(T, attention_window) keys, so it counts that length instead of T.
        """
        cfg = self.config
        n = self.num_params(exclude_embeddings=True)
        if cfg.tie_embeddings:
            n += self.lm_head.weight.numel()
        attended = sum(min(cfg.block_size, cfg.attention_window) if cfg.layer_is_banded(layer) else cfg.block_size
                       for layer in range(cfg.n_layer))
        return 6 * n + 12 * cfg.n_head * cfg.head_dim * attended

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: weight decay on matrices and embeddings (dim >= 2), none on norms and biases."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
