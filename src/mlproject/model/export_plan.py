"""Which transformers class holds a model exactly, or why none does: the one check that
`export-hf` applies to a trained model and `train` announces before training starts.

- GPT2LMHeadModel: LayerNorm + GELU + learned positions, dense attention (zeros stand in for
  absent biases).
- GPTNeoForCausalLM: the same blocks with GPT-3's alternating dense / banded layers; its
  q_proj has no bias, so a trained query bias cannot be held.
- LlamaForCausalLM: RMSNorm + SwiGLU + RoPE without biases, dense attention.

Anything else exports only as the suite's own model code (`export-hf --allow-custom-code`).
Plain config logic: no transformers import, so `train` pays nothing for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlproject.model.config import GPTConfig

GPT2_CLASS, NEO_CLASS, LLAMA_CLASS = "GPT2LMHeadModel", "GPTNeoForCausalLM", "LlamaForCausalLM"
CUSTOM_KIND = "custom code (trust_remote_code=True)"  # what the export prints and records for custom code
CUSTOM_FLAG = "--allow-custom-code"


@dataclass(frozen=True)
class ExportPlan:
    """The built-in class that holds the model exactly (None if none does) and every reason why not."""

    builtin: str | None
    reasons: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """What an export writes: the built-in class name, or `CUSTOM_KIND`."""
        return self.builtin or CUSTOM_KIND

    def refusal(self) -> str:
        """The one-line error of an export without `--allow-custom-code`: all reasons at once."""
        return (f"cannot export to a built-in transformers class: {'; '.join(self.reasons)}. Give {CUSTOM_FLAG} "
                "to write the suite's own model code into the folder instead (loaded with trust_remote_code=True; "
                "loading it runs that code, so it is your explicit choice)")

    def train_line(self) -> str:
        """The line `train` prints at start, so nobody finds out after training."""
        if self.builtin:
            return f"export: exact as transformers {self.builtin} (mlproject export-hf)"
        return (f"export: only as custom code (export-hf {CUSTOM_FLAG}, loaded with trust_remote_code=True): "
                + "; ".join(self.reasons))


def has_banded_layers(cfg: GPTConfig) -> bool:
    """Whether some layer attends fewer keys than a dense one would at full context."""
    return (any(cfg.layer_is_banded(i) for i in range(cfg.n_layer or 0))
            and cfg.attention_window is not None and cfg.block_size is not None
            and cfg.attention_window < cfg.block_size)


def export_plan(cfg: GPTConfig, *, query_bias: bool | None = None) -> ExportPlan:
    """The export of a model of resolved config `cfg`: a built-in class, or all reasons none holds it.

    `query_bias`: whether the attention queries carry a nonzero bias. An export reads it from
    the weights (a GPT-3 before training has zero biases); None assumes training makes them
    nonzero whenever the config has biases.
    """
    query_bias = cfg.bias if query_bias is None else query_bias
    banded = has_banded_layers(cfg)
    reasons: list[str] = []

    def unheld(name: str, why: str) -> None:
        reasons.append(f"{name}={getattr(cfg, name)!r} is held by no transformers class ({why})")

    if cfg.norm_type == "layernorm":  # the GPT-2 family: GPT-2, or GPT-Neo for banded layers
        cls = NEO_CLASS if banded else GPT2_CLASS
        if cfg.mlp_type != "gelu":
            unheld("mlp_type", f"{GPT2_CLASS}/{NEO_CLASS} need 'gelu' with layernorm; "
                               f"{LLAMA_CLASS} needs rmsnorm + swiglu + rope")
        if cfg.pos_encoding != "learned":
            unheld("pos_encoding", f"{GPT2_CLASS}/{NEO_CLASS} need 'learned' with layernorm; "
                                   f"{LLAMA_CLASS} needs rmsnorm + swiglu + rope")
        if banded and query_bias:
            unheld("bias", f"banded attention layers need {NEO_CLASS}, whose q_proj has no bias; "
                           "train with bias=false or attention_pattern=dense")
    else:
        cls = LLAMA_CLASS
        if cfg.mlp_type != "swiglu":
            unheld("mlp_type", f"{LLAMA_CLASS} needs 'swiglu' with rmsnorm")
        if cfg.pos_encoding != "rope":
            unheld("pos_encoding", f"{LLAMA_CLASS} needs 'rope' with rmsnorm")
        if cfg.bias:
            unheld("bias", f"{LLAMA_CLASS} has no biases")
        if banded:
            unheld("attention_pattern", f"{LLAMA_CLASS} has no banded layers; banded attention "
                                        f"exports only with layernorm + gelu + learned ({NEO_CLASS})")
    return ExportPlan(None if reasons else cls, tuple(reasons))
