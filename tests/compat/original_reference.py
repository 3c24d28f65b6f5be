"""The original suite's GPT2 and GPT3, written for these tests from its published architecture.

It computes what the original's `src/model/` computes and names its parameters as the original
does (`emb.tok_emb`, `emb.pos_emb`, `blocks.i.ln_1`, `blocks.i.attn.mha.w_q|w_k|w_v|w_o`,
`blocks.i.mlp.fc1|fc2` or `fc_in|fc_out`, `ln_f`, `lm_head` tied to `emb.tok_emb`), so a test can
make a checkpoint of the original's format without the original repository. The architecture,
as published:

- pre-norm blocks, x + attn(ln_1(x)), then x + mlp(ln_2(x)); LayerNorm (with bias) or RMSNorm
  (weight only, x / sqrt(mean(x^2) + eps) * weight), eps `layernorm_eps`;
- separate q/k/v/o projections, all with biases; scores scaled by 1/sqrt(head dim); "manual" and
  "sdpa" compute the same causal attention;
- positions: learned (`emb.pos_emb`), none, or RoPE on q and k rotating interleaved channel
  pairs (2i, 2i+1) by position * rope_base^(-2i/head_dim);
- MLP: exact (erf) GELU, hidden 4 * d_model for GPT2, mlp_expansion * d_model for GPT3; SwiGLU
  splits its input projection into (value, gate) and returns fc_out(value * silu(gate)), hidden
  size as the GELU MLP's;
- GPT3 adds `resid_dropout` on both residual branches (dropout only: no effect in eval mode).

It is deliberately written another way than both the original and `mlproject.model.gpt` (RoPE as
complex multiplication, GELU and RMSNorm from their formulas), so agreement is evidence.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

# The original scripts/train.py flags with their defaults, as its run_config (vars(args)) holds them.
TRAIN_ARGS: dict[str, Any] = {
    "dataset": "small", "block_size": 256, "batch_size": 32, "num_workers": 2, "model_version": "gpt2",
    "model_preset": None, "n_layer": 4, "n_head": 4, "d_model": 256, "dropout": 0.1, "layernorm_eps": 1e-5,
    "mlp_expansion": 4, "resid_dropout": None, "norm_type": "layernorm", "mlp_type": "gelu",
    "pos_encoding": "learned", "attention_impl": "manual", "rope_base": 10000, "gradient_checkpointing": False,
    "epochs": 10, "max_steps": None, "base_lr": 3e-4, "label_smoothing": 0.0, "warmup_steps": None,
    "weight_decay": None, "grad_clip": None, "beta1": None, "beta2": None, "scheduler_type": None,
    "log_every": 100, "preview_every": None, "val_checking": False, "save_ckpt_every": None, "seed": 42,
    "amp": False, "amp_dtype": "bf16", "device": "cpu", "compile": False, "compile_mode": "max-autotune",
    "output_dir": "checkpoints", "run_name": "gpt2_small_20260101_000000", "ckpt_name": "gpt2_small_20260101_000000.pt",
    "history_path": "checkpoints/gpt2_small_20260101_000000_history.pt",
    "config_path": "checkpoints/gpt2_small_20260101_000000_config.json",
}


def run_config(**overrides: Any) -> dict[str, Any]:
    """A train.py run_config: its defaults with `overrides` (unknown names are a test bug)."""
    unknown = set(overrides) - set(TRAIN_ARGS)
    assert not unknown, f"not flags of the original train.py: {unknown}"
    return {**TRAIN_ARGS, **overrides}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.weight


def norm(kind: str, dim: int, eps: float) -> nn.Module:
    return RMSNorm(dim, eps) if kind == "rmsnorm" else nn.LayerNorm(dim, eps=eps)


def gelu_erf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def rope_interleaved(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate each channel pair (2i, 2i+1) of (B, nh, T, hs) x, read as a complex number."""
    T, hs = x.size(-2), x.size(-1)
    freqs = base ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)          # (hs/2,)
    angles = torch.arange(T, dtype=torch.float64)[:, None] * freqs[None, :]      # (T, hs/2)
    turn = torch.polar(torch.ones_like(angles), angles)                          # e^(i angle)
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], hs // 2, 2))  # (B, nh, T, hs/2)
    return torch.view_as_real(pairs * turn).reshape(x.shape).to(x.dtype)


class Heads(nn.Module):
    """The original's `mha`: q/k/v/o projections and the attention itself."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        d = cfg["d_model"]
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(d, d) for _ in range(4))
        self.n_head, self.cfg = cfg["n_head"], cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

        q, k, v = heads(self.w_q(x)), heads(self.w_k(x)), heads(self.w_v(x))
        if self.cfg["pos_encoding"] == "rope":
            q, k = rope_interleaved(q, self.cfg["rope_base"]), rope_interleaved(k, self.cfg["rope_base"])
        if self.cfg["attention_impl"] == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = q @ k.transpose(-2, -1) / math.sqrt(C // self.n_head)              # (B, nh, T, T)
            future = torch.ones(T, T, dtype=torch.bool).triu(1)
            y = scores.masked_fill(future, float("-inf")).softmax(-1) @ v
        return self.w_o(y.transpose(1, 2).reshape(B, T, C))


class Attention(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.mha = Heads(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x)


class FeedForward(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        d = cfg["d_model"]
        hidden = (4 if cfg["model_version"] == "gpt2" else cfg["mlp_expansion"]) * d
        self.swiglu = cfg["mlp_type"] == "swiglu"
        if self.swiglu:
            self.fc_in, self.fc_out = nn.Linear(d, 2 * hidden), nn.Linear(hidden, d)
        else:
            self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            value, gate = self.fc_in(x).chunk(2, dim=-1)
            return self.fc_out(value * gate * torch.sigmoid(gate))
        return self.fc2(gelu_erf(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.ln_1 = norm(cfg["norm_type"], cfg["d_model"], cfg["layernorm_eps"])
        self.attn = Attention(cfg)
        self.ln_2 = norm(cfg["norm_type"], cfg["d_model"], cfg["layernorm_eps"])
        self.mlp = FeedForward(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Embeddings(nn.Module):
    def __init__(self, cfg: dict[str, Any], vocab_size: int):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, cfg["d_model"])
        if cfg["pos_encoding"] == "learned":
            self.pos_emb = nn.Embedding(cfg["block_size"], cfg["d_model"])

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx)
        if hasattr(self, "pos_emb"):
            x = x + self.pos_emb(torch.arange(idx.size(1)))
        return x


class OriginalGPT(nn.Module):
    """GPT2 or GPT3 of the original suite (eval-mode function; dropout left out)."""

    def __init__(self, cfg: dict[str, Any], vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.emb = Embeddings(cfg, vocab_size)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg["n_layer"]))
        self.ln_f = norm(cfg["norm_type"], cfg["d_model"], cfg["layernorm_eps"])
        self.lm_head = nn.Linear(cfg["d_model"], vocab_size, bias=False)
        self.lm_head.weight = self.emb.tok_emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # (B, T, V)


@torch.no_grad()
def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter drawn at random (norm weights near 1, biases nonzero): a wrong mapping shows."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if p.dim() == 1 and name.endswith("weight"):
            p.copy_(1.0 + 0.2 * noise)
        elif p.dim() == 1:
            p.copy_(0.1 * noise)
        else:
            p.copy_(noise / math.sqrt(p.size(-1)) if "emb" not in name else 0.5 * noise)
    return model.eval()


def save_last_checkpoint(model: OriginalGPT, cfg: dict[str, Any], path: Path, *, global_steps: int = 7) -> Path:
    """Write `<name>.last.pt` as the original's train.py does."""
    history = {"train_loss": [3.2, 2.9], "val_loss": [], "train_ppl": [24.5, 18.2], "val_ppl": [],
               "train_tok_acc": [11.0, 14.5], "val_tok_acc": [], "global_steps": global_steps, "max_steps": None}
    vocab = model.emb.tok_emb.num_embeddings
    torch.save({"model_state": model.state_dict(), "history": history, "run_config": cfg,
                "tokenizer_vocab_size": vocab}, path)
    return path
