"""Checkpoints of the original suite (its `GPT2` / `GPT3` classes) loaded as our GPT, exactly.

The original's `train.py` writes `<ckpt-name stem>.last.pt` = `{"model_state", "history",
"run_config", "tokenizer_vocab_size"}`, `run_config` being its flags as a flat dict; a research
run's `last.pt` holds `{"model_state", "run_config", "history"}` with the architecture nested
under `run_config["model_cfg"]`. Its best checkpoint (`<ckpt-name>`) has no `run_config`: the
run's `<run>_config.json` supplies it. All of them are plain containers and tensors, so they
load with `torch.load(weights_only=True)`.

How the original's modules map onto ours (eval-mode logits equal to float rounding):

- `emb.tok_emb` -> `transformer.wte` (tied to `lm_head`), `emb.pos_emb` -> `transformer.wpe`;
- `blocks.i.attn.mha.w_q|w_k|w_v` (separate, biased) -> the rows of the fused `attn.c_attn`,
  `w_o` -> `attn.c_proj`;
- GELU MLP `mlp.fc1` / `mlp.fc2` -> `mlp.c_fc` / `mlp.c_proj` with the exact erf GELU
  (`nn.GELU()`, so `gelu_approximate="none"`); hidden size 4 * d_model for GPT2 and
  `mlp_expansion` * d_model for GPT3, for SwiGLU too (`mlp_hidden_size`);
- SwiGLU `mlp.fc_in` computes `value, gate = chunk(2)`, ours `gate, up`: its halves swap;
- LayerNorm (with bias) and RMSNorm (weight only, same formula as `nn.RMSNorm`) keep their
  names (`ln_1`, `ln_2`, `ln_f`); `layernorm_eps` -> `norm_eps`, `rope_base` -> `rope_theta`;
- RoPE: the original rotates interleaved channel pairs (2i, 2i+1), ours split halves (i, i +
  hs/2) with the same frequency i. Permuting each head's q and k rows (2i -> i, 2i+1 -> i + hs/2)
  makes them the same computation: the rotation commutes with the permutation and q.k is a
  sum over channels, unchanged by permuting both;
- GPT3 is dense everywhere (no banded layers): `attention_pattern="dense"`; its
  `resid_dropout` -> ours.

Dropout placement differs in training only (the original drops the MLP hidden activations in
GPT2 and applies GPT3's residual dropout after an inner one; it has no dropout on attention
probabilities): the rates carry over, the eval-mode function is identical.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from mlproject.config import from_dict
from mlproject.errors import ConfigError, MlprojectError
from mlproject.model.checkpoint import clean_state_dict
from mlproject.model.config import GPTConfig
from mlproject.model.gpt import GPT

# The original's architecture keys with its defaults (scripts/train.py, src/research/common.py).
REQUIRED_KEYS = ("model_version", "block_size", "n_layer", "n_head", "d_model")
DEFAULTS: dict[str, Any] = {
    "dropout": 0.1, "layernorm_eps": 1e-5, "mlp_expansion": 4, "resid_dropout": None,
    "norm_type": "layernorm", "mlp_type": "gelu", "pos_encoding": "learned",
    "attention_impl": "manual", "rope_base": 10000,
}


def is_original_checkpoint(state: Any) -> bool:
    """Whether a loaded checkpoint dict is the original suite's (model_state, no format marker)."""
    return isinstance(state, dict) and "model_state" in state and "format" not in state


def architecture(run_config: dict[str, Any], source: str) -> dict[str, Any]:
    """The original's architecture keys of a run_config (flat, or research-nested in model_cfg)."""
    flat = dict(run_config)
    if isinstance(run_config.get("model_cfg"), dict):
        flat.update(run_config["model_cfg"])
    missing = [key for key in REQUIRED_KEYS if flat.get(key) is None]
    if missing:
        raise MlprojectError(f"{source}: run_config has no {', '.join(missing)}; expected the original's "
                             f"{', '.join(REQUIRED_KEYS)}")
    arch = {key: flat.get(key, default) for key, default in DEFAULTS.items()}
    arch.update({key: flat[key] for key in REQUIRED_KEYS})
    for key, default in DEFAULTS.items():
        if arch[key] is None and default is not None:
            arch[key] = default
    return arch


def original_config(arch: dict[str, Any], vocab_size: int, tied: bool, source: str) -> GPTConfig:
    """Our GPTConfig computing what the original's GPT2/GPT3 of `arch` computes."""
    version = arch["model_version"]
    if version not in ("gpt2", "gpt3"):
        raise ConfigError(f"{source}: model_version={version!r} is unknown; expected gpt2 or gpt3")
    # GPT2 hard-codes d_ff = 4 * d_model; GPT3 takes mlp_expansion (SwiGLU's hidden size alike)
    expansion = 4 if version == "gpt2" else arch["mlp_expansion"]
    values = dict(
        model_version=version, preset=None, n_layer=arch["n_layer"], n_head=arch["n_head"],
        d_model=arch["d_model"], block_size=arch["block_size"], vocab_size=vocab_size,
        dropout=arch["dropout"], resid_dropout=arch["resid_dropout"] if version == "gpt3" else None,
        bias=True, norm_type=arch["norm_type"], norm_eps=arch["layernorm_eps"],
        mlp_type=arch["mlp_type"], gelu_approximate="none", pos_encoding=arch["pos_encoding"],
        rope_theta=arch["rope_base"], attention_impl=arch["attention_impl"],
        attention_pattern="dense", tie_embeddings=tied,
    )
    if not isinstance(expansion, int) or isinstance(expansion, bool):
        raise ConfigError(f"{source}: mlp_expansion={expansion!r} in run_config; expected an integer "
                          "(its --mlp-expansion)")
    if isinstance(arch["d_model"], int):
        values["mlp_hidden_size"] = expansion * arch["d_model"]
    for key in ("norm_eps", "rope_theta", "dropout", "resid_dropout"):
        if isinstance(values[key], int) and not isinstance(values[key], bool):
            values[key] = float(values[key])  # JSON/argparse may hold 10000 for a float field
    return from_dict(GPTConfig, values, source=f"{source} run_config").resolved()


def _interleaved_to_halves(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder each head's output rows from interleaved pairs to split halves (see the module doc)."""
    hs = weight.size(0) // n_head
    order = torch.cat([torch.arange(0, hs, 2), torch.arange(1, hs, 2)])  # new row i <- old row order[i]
    per_head = weight.reshape(n_head, hs, *weight.shape[1:])            # (nh, hs, C) or (nh, hs)
    return per_head[:, order].reshape(weight.shape)


def _attention(src: dict[str, torch.Tensor], i: int, cfg: GPTConfig) -> dict[str, torch.Tensor]:
    theirs, ours = f"blocks.{i}.attn.mha.", f"transformer.h.{i}.attn."
    out = {}
    for part in ("weight", "bias"):
        q, k, v = (src[f"{theirs}w_{name}.{part}"] for name in ("q", "k", "v"))
        if cfg.pos_encoding == "rope":
            q, k = _interleaved_to_halves(q, cfg.n_head), _interleaved_to_halves(k, cfg.n_head)
        out[f"{ours}c_attn.{part}"] = torch.cat([q, k, v], dim=0)  # (3C, C) / (3C,)
        out[f"{ours}c_proj.{part}"] = src[f"{theirs}w_o.{part}"]
    return out


def _mlp(src: dict[str, torch.Tensor], i: int, cfg: GPTConfig) -> dict[str, torch.Tensor]:
    theirs, ours = f"blocks.{i}.mlp.", f"transformer.h.{i}.mlp."
    out = {}
    for part in ("weight", "bias"):
        if cfg.mlp_type == "swiglu":
            value, gate = src[f"{theirs}fc_in.{part}"].chunk(2, dim=0)  # theirs: value rows first
            out[f"{ours}c_fc.{part}"] = torch.cat([gate, value], dim=0)  # ours: gate rows first
            out[f"{ours}c_proj.{part}"] = src[f"{theirs}fc_out.{part}"]
        else:
            out[f"{ours}c_fc.{part}"] = src[f"{theirs}fc1.{part}"]
            out[f"{ours}c_proj.{part}"] = src[f"{theirs}fc2.{part}"]
    return out


def _norms(src: dict[str, torch.Tensor], i: int | None, cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """The norms of block i (ln_1, ln_2), or the final one (ln_f) for i None: same names as ours."""
    theirs, ours = ("", "transformer.") if i is None else (f"blocks.{i}.", f"transformer.h.{i}.")
    names = ("ln_f",) if i is None else ("ln_1", "ln_2")
    parts = ("weight",) if cfg.norm_type == "rmsnorm" else ("weight", "bias")
    return {f"{ours}{name}.{part}": src[f"{theirs}{name}.{part}"] for name in names for part in parts}


def original_state_dict(src: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Our state dict from the original's `model_state` (KeyError names a missing tensor)."""
    sd = {"transformer.wte.weight": src["emb.tok_emb.weight"]}
    if cfg.pos_encoding == "learned":
        sd["transformer.wpe.weight"] = src["emb.pos_emb.weight"]
    for i in range(cfg.n_layer):
        sd.update(_norms(src, i, cfg))
        sd.update(_attention(src, i, cfg))
        sd.update(_mlp(src, i, cfg))
    sd.update(_norms(src, None, cfg))
    sd["lm_head.weight"] = src["emb.tok_emb.weight" if cfg.tie_embeddings else "lm_head.weight"]
    return sd


def expected_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The original's parameter names and shapes for an architecture (V vocab, C d_model, H MLP hidden)."""
    V, C, H = cfg.vocab_size, cfg.d_model, cfg.mlp_hidden
    norm = {"weight": (C,)} if cfg.norm_type == "rmsnorm" else {"weight": (C,), "bias": (C,)}
    mlp = ({"fc_in": (2 * H, C), "fc_out": (C, H)} if cfg.mlp_type == "swiglu"
           else {"fc1": (H, C), "fc2": (C, H)})
    shapes: dict[str, tuple[int, ...]] = {"emb.tok_emb.weight": (V, C), "lm_head.weight": (V, C)}
    if cfg.pos_encoding == "learned":
        shapes["emb.pos_emb.weight"] = (cfg.block_size, C)
    for i in range(cfg.n_layer):
        shapes.update({f"blocks.{i}.{ln}.{p}": shape for ln in ("ln_1", "ln_2") for p, shape in norm.items()})
        shapes.update({f"blocks.{i}.attn.mha.w_{n}.{p}": (C, C) if p == "weight" else (C,)
                       for n in "qkvo" for p in ("weight", "bias")})
        shapes.update({f"blocks.{i}.mlp.{n}.weight": shape for n, shape in mlp.items()})
        shapes.update({f"blocks.{i}.mlp.{n}.bias": shape[:1] for n, shape in mlp.items()})
    shapes.update({f"ln_f.{p}": shape for p, shape in norm.items()})
    return shapes


def check_state(src: dict[str, torch.Tensor], cfg: GPTConfig, source: str) -> None:
    """A one-line error naming the first unknown, missing or misshapen tensor of `src` for `cfg`."""
    expected = expected_shapes(cfg)
    described = (f"{cfg.model_version} with n_layer={cfg.n_layer}, d_model={cfg.d_model}, "
                 f"block_size={cfg.block_size}, norm_type={cfg.norm_type}, mlp_type={cfg.mlp_type}, "
                 f"pos_encoding={cfg.pos_encoding}")
    unknown = sorted(set(src) - set(expected))
    missing = sorted(set(expected) - set(src) - ({"lm_head.weight"} if cfg.tie_embeddings else set()))
    if unknown:
        raise MlprojectError(f"{source}: model_state has {unknown[0]!r}, unknown to the original's {described} "
                             "that its run_config describes")
    if missing:
        raise MlprojectError(f"{source}: model_state lacks {missing[0]!r} of the original's {described} "
                             "that its run_config describes")
    for key, tensor in src.items():
        if tuple(tensor.shape) != expected[key]:
            raise MlprojectError(f"{source}: {key} has shape {tuple(tensor.shape)} in model_state but "
                                 f"{expected[key]} in the original's {described} that its run_config describes")


def from_original(state: dict[str, Any], source: str,
                  run_config: dict[str, Any] | None = None) -> tuple[GPT, dict[str, Any]]:
    """(our GPT in eval mode, checkpoint entries in our format) from a loaded original checkpoint."""
    run_config = run_config if run_config is not None else state.get("run_config")
    if not isinstance(run_config, dict):
        raise MlprojectError(f"{source} is an original-suite checkpoint without run_config (its best checkpoint?); "
                             "use its .last.pt, or `mlproject import-original --run-config <run>_config.json`")
    if not isinstance(state["model_state"], dict):
        raise MlprojectError(f"{source}: model_state is a {type(state['model_state']).__name__}; "
                             "expected a state dict")
    src = clean_state_dict(state["model_state"])
    if "emb.tok_emb.weight" not in src:
        raise MlprojectError(f"{source}: model_state has no 'emb.tok_emb.weight'; "
                             "not a GPT2/GPT3 of the original suite")
    tok_emb = src["emb.tok_emb.weight"]
    tied = "lm_head.weight" not in src or torch.equal(src["lm_head.weight"], tok_emb)
    cfg = original_config(architecture(run_config, source), tok_emb.size(0), tied, source)
    check_state(src, cfg, source)
    model = GPT(cfg)
    model.load_state_dict(original_state_dict(src, cfg), strict=True)
    history = state.get("history") if isinstance(state.get("history"), dict) else {}
    step = history.get("global_steps") or state.get("global_step") or 0
    entries = {"model_config": dataclasses.asdict(cfg), "model": model.state_dict(), "step": int(step),
               "original_run_config": run_config}
    return model.eval(), entries


def read_run_config(path: str | Path) -> dict[str, Any]:
    """The original's `<run>_config.json` (or a research run's config.json) as a dict."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MlprojectError(f"run config not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise MlprojectError(f"{path} is not a readable JSON run config: {exc}") from None
    if not isinstance(data, dict):
        raise MlprojectError(f"{path} holds a JSON {type(data).__name__}; expected the run's config object")
    return data
