"""Export our GPT to a Hugging Face `transformers` folder: safetensors, config.json, tokenizer.

`AutoModelForCausalLM.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)` load the
result. Each architecture goes to the HF class that computes exactly what ours does:

- GPT2LMHeadModel: LayerNorm + GELU + learned positions, dense attention. HF GPT-2 always has
  biases; a bias=False model exports zeros there. Its `Conv1D` weights are (in, out).
- GPTNeoForCausalLM: the same blocks with GPT-3's alternating dense ("global") / banded
  ("local", the last `window_size` keys, itself included) layers, layer 0 dense as ours. Its
  quirks: attention scores are not scaled, so 1/sqrt(head_dim) goes into the query weights;
  q/k/v have no bias. A key bias adds the same q.b_k to every score of a query (softmax
  ignores it) and a value bias adds b_v to every output (the weights sum to 1), so that one
  folds into out_proj's bias; a query bias cannot be held, so banded models need bias=False.
- LlamaForCausalLM: RMSNorm + SwiGLU + RoPE without biases, dense attention.

Banded layers whose window covers the whole context are dense, and export as such. Any other
combination (`model.export_plan` decides, and names every field no class holds) exports only as
the suite's own model code with `allow_custom_code` (`model.hf_custom`), or is a one-line error
listing all the reasons at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mlproject.errors import MlprojectError, require_extra
from mlproject.outdir import check_replaceable, output_folder
from mlproject.model.config import GPTConfig
from mlproject.model.export_plan import GPT2_CLASS, LLAMA_CLASS, NEO_CLASS, ExportPlan, export_plan

_GELU = {"tanh": "gelu_new", "none": "gelu"}  # our gelu_approximate -> HF activation name


def _transformers() -> Any:
    return require_extra("transformers", "dev", "exporting to Hugging Face (export-hf)")


def plan_for(model: torch.nn.Module) -> ExportPlan:
    """The export of `model`: its built-in class, or every reason none holds it (its query bias read
    from the weights: a GPT-3 whose biases are still zero exports to GPT-Neo)."""
    cfg = model.config
    query_bias = any(block.attn.c_attn.bias is not None and bool(block.attn.c_attn.bias[:cfg.d_model].any())
                     for block in model.transformer.h)
    return export_plan(cfg, query_bias=query_bias)


def hf_class_for(model: torch.nn.Module) -> str:
    """The transformers class that holds `model` exactly, or a one-line error naming every field none holds."""
    plan = plan_for(model)
    if plan.builtin is None:
        raise MlprojectError(plan.refusal())
    return plan.builtin


# ----------------------------------------------------------------------------- configs

def _hf_config(cls: str, cfg: GPTConfig, eot_id: int | None, pad_id: int | None) -> Any:
    tf = _transformers()
    tokens = dict(bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=pad_id,
                  tie_word_embeddings=cfg.tie_embeddings)
    if cls == GPT2_CLASS:
        return tf.GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.d_model,
                             n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=cfg.mlp_hidden,
                             activation_function=_GELU[cfg.gelu_approximate], resid_pdrop=cfg.residual_dropout,
                             embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, layer_norm_epsilon=cfg.norm_eps,
                             **tokens)
    if cls == NEO_CLASS:
        pairs, odd = divmod(cfg.n_layer, 2)  # ours: even layers dense, odd layers banded
        types: list[Any] = [[["global", "local"], pairs]] + ([[["global"], 1]] if odd else [])
        return tf.GPTNeoConfig(vocab_size=cfg.vocab_size, max_position_embeddings=cfg.block_size,
                               hidden_size=cfg.d_model, num_layers=cfg.n_layer, num_heads=cfg.n_head,
                               attention_types=types, intermediate_size=cfg.mlp_hidden,
                               window_size=cfg.attention_window, activation_function=_GELU[cfg.gelu_approximate],
                               resid_dropout=cfg.residual_dropout, embed_dropout=cfg.dropout,
                               attention_dropout=cfg.dropout,
                               layer_norm_epsilon=cfg.norm_eps, **tokens)
    return tf.LlamaConfig(vocab_size=cfg.vocab_size, max_position_embeddings=cfg.block_size,
                          hidden_size=cfg.d_model, intermediate_size=cfg.mlp_hidden, num_hidden_layers=cfg.n_layer,
                          num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_head, head_dim=cfg.head_dim,
                          hidden_act="silu", rms_norm_eps=cfg.norm_eps, attention_dropout=cfg.dropout,
                          rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
                          attention_bias=False, mlp_bias=False, **tokens)


# ----------------------------------------------------------------------------- weights

def _zeros_like_bias(weight: torch.Tensor) -> torch.Tensor:
    return torch.zeros(weight.size(0), dtype=weight.dtype)


def _embeddings_and_head(src: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """The tensors GPT-2 and GPT-Neo name alike: token and position embeddings, final norm, head."""
    sd = {"transformer.wte.weight": src["transformer.wte.weight"],
          "transformer.wpe.weight": src["transformer.wpe.weight"],
          "transformer.ln_f.weight": src["transformer.ln_f.weight"],
          "transformer.ln_f.bias": src.get("transformer.ln_f.bias", _zeros_like_bias(src["transformer.ln_f.weight"]))}
    if not cfg.tie_embeddings:
        sd["lm_head.weight"] = src["lm_head.weight"]
    return sd


def _gpt2_state(src: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    sd = _embeddings_and_head(src, cfg)
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        for name in ("ln_1", "ln_2"):
            sd[f"{p}{name}.weight"] = src[f"{p}{name}.weight"]
            sd[f"{p}{name}.bias"] = src.get(f"{p}{name}.bias", _zeros_like_bias(src[f"{p}{name}.weight"]))
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            weight = src[f"{p}{name}.weight"]
            sd[f"{p}{name}.weight"] = weight.t().contiguous()  # Linear (out, in) -> Conv1D (in, out)
            sd[f"{p}{name}.bias"] = src.get(f"{p}{name}.bias", _zeros_like_bias(weight))
    return sd


def _neo_state(src: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    C = cfg.d_model
    sd = _embeddings_and_head(src, cfg)
    for i in range(cfg.n_layer):
        p, a = f"transformer.h.{i}.", f"transformer.h.{i}.attn.attention."
        for name in ("ln_1", "ln_2"):
            sd[f"{p}{name}.weight"] = src[f"{p}{name}.weight"]
            sd[f"{p}{name}.bias"] = src.get(f"{p}{name}.bias", _zeros_like_bias(src[f"{p}{name}.weight"]))
        wq, wk, wv = src[f"{p}attn.c_attn.weight"].split(C, dim=0)  # (C, C) each
        bias = src.get(f"{p}attn.c_attn.bias")
        w_out = src[f"{p}attn.c_proj.weight"]
        b_out = src.get(f"{p}attn.c_proj.bias", _zeros_like_bias(w_out))
        if bias is not None:
            b_out = b_out + w_out @ bias[2 * C:]  # softmax weights sum to 1: b_v passes through to out_proj
        sd[a + "q_proj.weight"] = wq / cfg.head_dim ** 0.5  # GPT-Neo does not scale the scores
        sd[a + "k_proj.weight"] = wk                       # b_k shifts a query's scores equally: dropped
        sd[a + "v_proj.weight"] = wv
        sd[a + "out_proj.weight"] = w_out
        sd[a + "out_proj.bias"] = b_out
        for name in ("c_fc", "c_proj"):
            weight = src[f"{p}mlp.{name}.weight"]
            sd[f"{p}mlp.{name}.weight"] = weight
            sd[f"{p}mlp.{name}.bias"] = src.get(f"{p}mlp.{name}.bias", _zeros_like_bias(weight))
    return sd


def _llama_state(src: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    C, H = cfg.d_model, cfg.mlp_hidden
    sd = {"model.embed_tokens.weight": src["transformer.wte.weight"],
          "model.norm.weight": src["transformer.ln_f.weight"]}
    if not cfg.tie_embeddings:
        sd["lm_head.weight"] = src["lm_head.weight"]
    for i in range(cfg.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        sd[theirs + "input_layernorm.weight"] = src[ours + "ln_1.weight"]
        sd[theirs + "post_attention_layernorm.weight"] = src[ours + "ln_2.weight"]
        for name, w in zip("qkv", src[ours + "attn.c_attn.weight"].split(C, dim=0)):
            sd[theirs + f"self_attn.{name}_proj.weight"] = w  # both rotate split halves: no permutation
        sd[theirs + "self_attn.o_proj.weight"] = src[ours + "attn.c_proj.weight"]
        gate, up = src[ours + "mlp.c_fc.weight"].split(H, dim=0)
        sd[theirs + "mlp.gate_proj.weight"] = gate
        sd[theirs + "mlp.up_proj.weight"] = up
        sd[theirs + "mlp.down_proj.weight"] = src[ours + "mlp.c_proj.weight"]
    return sd


_STATES = {GPT2_CLASS: _gpt2_state, NEO_CLASS: _neo_state, LLAMA_CLASS: _llama_state}


def to_hf(model: torch.nn.Module, *, eot_id: int | None = None, pad_id: int | None = None) -> Any:
    """A transformers model (eval mode, float32, CPU) computing the same logits as `model`."""
    tf = _transformers()
    cls = hf_class_for(model)
    cfg = model.config
    src = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    with torch.no_grad():
        hf_model = getattr(tf, cls)(_hf_config(cls, cfg, eot_id, pad_id))
        missing, unexpected = hf_model.load_state_dict(_STATES[cls](src, cfg), strict=False)
    real = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_embeddings)]  # the tied head
    if real or unexpected:
        raise MlprojectError(f"export to {cls}: weights do not map (missing {real[:3]}, unexpected {unexpected[:3]})")
    if cfg.tie_embeddings:
        hf_model.tie_weights()
    return hf_model.eval()


# ----------------------------------------------------------------------------- tokenizer

def to_hf_tokenizer(tokenizer_path: str | os.PathLike[str], block_size: int) -> Any:
    """A `PreTrainedTokenizerFast` of our tokenizer.json with its `<|endoftext|>` / `<|pad|>` tokens."""
    tf = _transformers()
    from mlproject.data.tokenizer import EOT, PAD, load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    pad = PAD if tokenizer.token_to_id(PAD) is not None else EOT
    return tf.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOT, eos_token=EOT, pad_token=pad,
                                      model_max_length=block_size, clean_up_tokenization_spaces=False)


EXPORT_KIND = "export-hf"  # the output-folder marker's kind: only an earlier export is ever replaced


def export_hf(model: torch.nn.Module, tokenizer_path: str | os.PathLike[str], output: str | os.PathLike[str], *,
              allow_custom_code: bool = False) -> str:
    """Write the HF folder for `model` and its tokenizer to `output`; return what it holds: the
    built-in class name, or `CUSTOM_KIND` (only with `allow_custom_code`: loading it runs code).

    The folder is written beside `output` and renamed into place, so a reader never sees half
    an export; an earlier export at `output` (by its marker, holding nothing the export did not
    write) is replaced, any other non-empty folder refused (`mlproject.outdir`). The marker
    records the kind under "export".
    """
    from mlproject.data.tokenizer import load_tokenizer, special_ids

    out = Path(output).expanduser()
    check_replaceable(out, EXPORT_KIND)  # before the conversion: a refused folder costs nothing
    plan = plan_for(model)
    if plan.builtin is None and not allow_custom_code:
        raise MlprojectError(plan.refusal())
    eot_id, pad_id = special_ids(load_tokenizer(tokenizer_path))
    hf_model = to_hf(model, eot_id=eot_id, pad_id=pad_id) if plan.builtin else None
    hf_tokenizer = to_hf_tokenizer(tokenizer_path, model.config.block_size)
    with output_folder(out, EXPORT_KIND, details={"export": plan.kind}) as tmp:
        if hf_model is not None:
            hf_model.save_pretrained(tmp, safe_serialization=True)
        else:
            from mlproject.model.hf_custom import write_custom

            write_custom(model, tmp, eot_id=eot_id, pad_id=pad_id)
        hf_tokenizer.save_pretrained(tmp)
    return plan.kind
