"""Import Hugging Face `transformers` GPT-2 and Llama models as our GPT, weights included.

- GPT2LMHeadModel -> gpt2: learned positions, LayerNorm, GELU MLP, biases. HF GPT-2 stores its
  projections as `Conv1D` with (in, out) weights, the transpose of `nn.Linear`'s (out, in).
- LlamaForCausalLM -> rmsnorm + swiglu + rope, no biases. q/k/v are fused into `c_attn` and
  gate/up into `c_fc`; HF Llama rotates split halves (`rotate_half`), as `gpt.apply_rope`
  does, so no permutation of the q/k rows is needed.

`transformers` is a dev dependency, imported only inside these functions.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from mlproject.errors import MlprojectError, require_extra
from mlproject.model.config import GPTConfig
from mlproject.model.gpt import GPT

# HF GPT-2 activation name -> our GELU form
_GPT2_ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "none"}


def _gpt2_config(hf: Any) -> GPTConfig:
    if hf.activation_function not in _GPT2_ACTIVATIONS:
        raise MlprojectError(f"GPT-2 activation_function={hf.activation_function!r} is not supported; "
                             f"expected one of: {', '.join(_GPT2_ACTIVATIONS)}")
    if not hf.scale_attn_weights or hf.scale_attn_by_inverse_layer_idx:
        raise MlprojectError("GPT-2 attention scaling other than 1/sqrt(head_dim) is not supported "
                             "(scale_attn_weights=False or scale_attn_by_inverse_layer_idx=True)")
    return GPTConfig(
        model_version="gpt2", preset=None, n_layer=hf.n_layer, n_head=hf.n_head, d_model=hf.n_embd,
        block_size=hf.n_positions, vocab_size=hf.vocab_size, dropout=hf.resid_pdrop, bias=True,
        norm_type="layernorm", norm_eps=hf.layer_norm_epsilon, mlp_type="gelu",
        gelu_approximate=_GPT2_ACTIVATIONS[hf.activation_function], mlp_hidden_size=hf.n_inner,
        pos_encoding="learned", attention_pattern="dense", tie_embeddings=hf.tie_word_embeddings,
    ).resolved()


def _gpt2_state_dict(hf_model: Any, config: GPTConfig) -> dict[str, torch.Tensor]:
    src = hf_model.state_dict()
    sd = {
        "transformer.wte.weight": src["transformer.wte.weight"],
        "transformer.wpe.weight": src["transformer.wpe.weight"],
        "transformer.ln_f.weight": src["transformer.ln_f.weight"],
        "transformer.ln_f.bias": src["transformer.ln_f.bias"],
        "lm_head.weight": src["transformer.wte.weight" if config.tie_embeddings else "lm_head.weight"],
    }
    conv1d = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    for i in range(config.n_layer):
        prefix = f"transformer.h.{i}."
        for name in ("ln_1", "ln_2"):
            sd[f"{prefix}{name}.weight"] = src[f"{prefix}{name}.weight"]
            sd[f"{prefix}{name}.bias"] = src[f"{prefix}{name}.bias"]
        for name in conv1d:
            sd[f"{prefix}{name}.weight"] = src[f"{prefix}{name}.weight"].t()  # Conv1D (in, out) -> Linear (out, in)
            sd[f"{prefix}{name}.bias"] = src[f"{prefix}{name}.bias"]
    return sd


def _rope_theta(hf: Any) -> float:
    params = getattr(hf, "rope_parameters", None) or {}
    if "rope_type" not in params:  # transformers 4.x: flat `rope_theta` and `rope_scaling`
        params = dict(getattr(hf, "rope_scaling", None) or {}, rope_theta=getattr(hf, "rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise MlprojectError(f"Llama rope_type={rope_type!r} (RoPE scaling) is not supported; expected 'default'")
    return float(params["rope_theta"])


def _llama_config(hf: Any) -> GPTConfig:
    if hf.num_key_value_heads != hf.num_attention_heads:
        raise MlprojectError(f"grouped-query attention is not supported: num_key_value_heads="
                             f"{hf.num_key_value_heads} != num_attention_heads={hf.num_attention_heads}")
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    if head_dim * hf.num_attention_heads != hf.hidden_size:
        raise MlprojectError(f"Llama head_dim={head_dim} is not hidden_size/num_attention_heads="
                             f"{hf.hidden_size}/{hf.num_attention_heads}; not supported")
    if hf.hidden_act != "silu":
        raise MlprojectError(f"Llama hidden_act={hf.hidden_act!r} is not supported; expected 'silu'")
    if getattr(hf, "attention_bias", False) or getattr(hf, "mlp_bias", False):
        raise MlprojectError("Llama attention_bias/mlp_bias=True is not supported; expected no biases")
    return GPTConfig(
        model_version="gpt2", preset=None, n_layer=hf.num_hidden_layers, n_head=hf.num_attention_heads,
        d_model=hf.hidden_size, block_size=hf.max_position_embeddings, vocab_size=hf.vocab_size,
        dropout=float(getattr(hf, "attention_dropout", 0.0) or 0.0), bias=False, norm_type="rmsnorm",
        norm_eps=hf.rms_norm_eps, mlp_type="swiglu", mlp_hidden_size=hf.intermediate_size,
        pos_encoding="rope", rope_theta=_rope_theta(hf), attention_pattern="dense",
        tie_embeddings=hf.tie_word_embeddings,
    ).resolved()


def _llama_state_dict(hf_model: Any, config: GPTConfig) -> dict[str, torch.Tensor]:
    src = hf_model.state_dict()
    sd = {
        "transformer.wte.weight": src["model.embed_tokens.weight"],
        "transformer.ln_f.weight": src["model.norm.weight"],
        "lm_head.weight": src["model.embed_tokens.weight" if config.tie_embeddings else "lm_head.weight"],
    }
    for i in range(config.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        sd[ours + "ln_1.weight"] = src[theirs + "input_layernorm.weight"]
        sd[ours + "ln_2.weight"] = src[theirs + "post_attention_layernorm.weight"]
        sd[ours + "attn.c_attn.weight"] = torch.cat(
            [src[theirs + f"self_attn.{p}_proj.weight"] for p in ("q", "k", "v")], dim=0)  # (3C, C)
        sd[ours + "attn.c_proj.weight"] = src[theirs + "self_attn.o_proj.weight"]
        sd[ours + "mlp.c_fc.weight"] = torch.cat(
            [src[theirs + "mlp.gate_proj.weight"], src[theirs + "mlp.up_proj.weight"]], dim=0)  # (2H, C)
        sd[ours + "mlp.c_proj.weight"] = src[theirs + "mlp.down_proj.weight"]
    return sd


def from_hf(hf_model: Any) -> GPT:
    """Our GPT with the architecture and weights of a `GPT2LMHeadModel` or `LlamaForCausalLM`."""
    kind = type(hf_model).__name__
    if kind == "GPT2LMHeadModel":
        config = _gpt2_config(hf_model.config)
        state = _gpt2_state_dict(hf_model, config)
    elif kind == "LlamaForCausalLM":
        config = _llama_config(hf_model.config)
        state = _llama_state_dict(hf_model, config)
    else:
        raise MlprojectError(f"cannot import a {kind}; supported: GPT2LMHeadModel, LlamaForCausalLM")
    model = GPT(config)
    model.load_state_dict(state, strict=True)  # copies, converting to the model's float32
    return model.eval()


def load_hf_dir(model_dir: str | os.PathLike[str]) -> GPT:
    """Load a local `save_pretrained` folder of a GPT-2 or Llama causal LM as our GPT (offline)."""
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise MlprojectError(f"{path} is not a Hugging Face model folder (no config.json)")
    require_extra("transformers", "dev", "importing Hugging Face models (import-hf)")
    from transformers import AutoConfig, AutoModelForCausalLM
    try:
        model_type = AutoConfig.from_pretrained(path, local_files_only=True).model_type
        if model_type not in ("gpt2", "llama"):
            raise MlprojectError(f"{path}: model_type={model_type!r} is not supported; expected gpt2 or llama")
        hf_model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MlprojectError(f"{path}: cannot load the model: {str(exc).splitlines()[0]}") from None
    except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) refused to run the file's code
        blocked = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), "")
        raise MlprojectError(f"{path}: the weights file holds more than tensors and was refused by the "
                             f"weights-only loader{f' ({blocked})' if blocked else ''}; convert it to "
                             "safetensors from a trusted copy") from None
    return from_hf(hf_model)
