"""GPTConfig: the model's architecture, presets by name, and validation.

A config is written by a user with a preset and optional size overrides; `resolved()` returns
the concrete config (preset sizes filled in, per-version defaults applied, validated) that the
model is built from and that runs record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from mlproject.config import check_types, field, replace
from mlproject.errors import ConfigError

# name -> (n_layer, n_head, d_model)
PRESETS: dict[str, tuple[int, int, int]] = {
    "nano": (4, 4, 256),
    "small": (8, 8, 512),
    "base": (12, 12, 768),
    "gpt2-124m": (12, 12, 768),   # GPT-2 small (Radford et al., 2019)
    "gpt2-350m": (24, 16, 1024),  # GPT-2 medium
}


def preset_sizes(name: str) -> tuple[int, int, int]:
    """(n_layer, n_head, d_model) of preset `name`; the one check of a preset name."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is unknown; expected one of: {', '.join(PRESETS)}")
    return PRESETS[name]


# Context length when the config leaves it unset: GPT-2 used 1024, GPT-3 doubled it to 2048
# (Brown et al., 2020, section 2.1).
DEFAULT_BLOCK_SIZE = {"gpt2": 1024, "gpt3": 2048}


def default_window(block_size: int) -> int:
    """Band width of GPT-3's locally banded layers when the config leaves it unset: isqrt(block_size).

    GPT-3 (Brown et al., 2020, section 2.1) uses "alternating dense and locally banded sparse
    attention patterns ... similar to the Sparse Transformer" but does not publish the band.
    The Sparse Transformer (Child et al., 2019, section 4.3) chooses its local window l close to
    sqrt(n): each banded layer then costs O(n sqrt(n)) and, with the dense layers in between,
    any position still reaches any other in two hops. Deriving it from block_size keeps the band
    binding at every context length (a constant such as 256 would make GPT-3 exactly GPT-2 at
    block_size <= 256): 1024 -> 32, 2048 -> 45, 256 -> 16, 64 -> 8.
    """
    return max(1, math.isqrt(block_size))


@dataclass
class GPTConfig:
    """Architecture of a decoder-only transformer. Fields left None are resolved by `resolved()`."""

    model_version: Literal["gpt2", "gpt3"] = field("gpt2", help="architecture preset: gpt2 or gpt3")
    preset: str | None = field("nano", help=f"size preset: {', '.join(PRESETS)}",
                               aliases=("--model-preset", "--model_preset"))
    n_layer: int | None = field(None, help="transformer blocks (overrides the preset)")
    n_head: int | None = field(None, help="attention heads (overrides the preset)")
    d_model: int | None = field(None, help="embedding width (overrides the preset)")
    block_size: int | None = field(None, help="context length (default: 1024 gpt2, 2048 gpt3)")
    vocab_size: int = field(50304, cli=False, help="set from the tokenizer at run time")
    dropout: float = field(0.0, help="dropout on attention, residual and embedding outputs")
    resid_dropout: float | None = field(
        None, help="dropout on each block's residual branches (attention and MLP outputs, before the add); "
                   "default: dropout (GPT-3's separate residual dropout)")
    bias: bool = field(True, help="bias in linear layers and norms")
    norm_type: Literal["layernorm", "rmsnorm"] = field("layernorm", help="normalisation layer")
    norm_eps: float = field(1e-5, help="epsilon of the norm layers", aliases=("--layernorm-eps", "--layernorm_eps"))
    mlp_type: Literal["gelu", "swiglu"] = field("gelu", help="feed-forward block")
    gelu_approximate: Literal["tanh", "none"] = field(
        "tanh", help="GELU form: GPT-2's tanh approximation, or none for the exact erf GELU")
    mlp_expansion: float = field(4.0, help="MLP hidden size as a multiple of d_model (GELU)")
    mlp_hidden_size: int | None = field(None, help="explicit MLP hidden size (overrides expansion)")
    pos_encoding: Literal["learned", "rope", "none"] = field("learned", help="position information")
    rope_theta: float = field(10000.0, help="RoPE base frequency", aliases=("--rope-base", "--rope_base"))
    attention_impl: Literal["manual", "sdpa"] = field("sdpa", help="attention kernel")
    attention_pattern: Literal["dense", "alternating"] | None = field(
        None, help="dense everywhere, or GPT-3's alternating dense / banded layers "
                   "(default: dense gpt2, alternating gpt3)")
    attention_window: int | None = field(
        None, help="window of the banded (locally sparse) layers (default: isqrt(block_size), see default_window)")
    tie_embeddings: bool = field(True, help="share the token embedding with the output head")
    gradient_checkpointing: bool = field(False, help="recompute block activations in backward")

    def resolved(self) -> GPTConfig:
        """The concrete config: preset sizes applied, per-version defaults filled, validated."""
        sizes = preset_sizes(self.preset) if self.preset is not None else (None, None, None)
        changes: dict[str, Any] = {}
        for name, size in zip(("n_layer", "n_head", "d_model"), sizes):
            changes[name] = getattr(self, name) if getattr(self, name) is not None else size
            if changes[name] is None:
                raise ConfigError(f"{name} is not set; give a preset or an explicit {name}")
        block_size = DEFAULT_BLOCK_SIZE[self.model_version] if self.block_size is None else self.block_size
        changes["block_size"] = block_size
        if self.attention_pattern is None:
            changes["attention_pattern"] = "alternating" if self.model_version == "gpt3" else "dense"
        if self.attention_window is None:
            changes["attention_window"] = default_window(block_size)
        cfg = replace(self, **changes)  # validated
        if (cfg.attention_pattern == "alternating" and cfg.attention_window is not None
                and cfg.attention_window >= cfg.block_size):
            # A band as wide as the context masks nothing: every "banded" layer is dense and the
            # model is GPT-2 under another name (a compare would measure a model against itself).
            raise ConfigError(
                f"attention_window={cfg.attention_window} is not below block_size={cfg.block_size}, so the "
                f"banded layers of attention_pattern='alternating' attend the whole context; lower "
                f"attention_window (or leave it unset) or set attention_pattern: dense")
        return cfg

    @property
    def head_dim(self) -> int:
        assert self.d_model is not None and self.n_head is not None
        return self.d_model // self.n_head

    @property
    def residual_dropout(self) -> float:
        """Dropout rate of the residual branches: `resid_dropout`, or `dropout` when unset."""
        return self.dropout if self.resid_dropout is None else self.resid_dropout

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the MLP.

        SwiGLU has three weight matrices instead of two, so its hidden size is scaled by 2/3 to
        keep the parameter count of the GELU MLP (Shazeer, 2020; LLaMA, Touvron et al., 2023),
        rounded up to a multiple of 64 for efficient matmuls.
        """
        if self.mlp_hidden_size is not None:
            return self.mlp_hidden_size
        assert self.d_model is not None
        hidden = int(self.mlp_expansion * self.d_model)
        if self.mlp_type == "swiglu":
            hidden = int(2 * hidden / 3)
            hidden = 64 * ((hidden + 63) // 64)
        return hidden

    def layer_is_banded(self, layer: int) -> bool:
        """GPT-3 alternates dense and locally banded sparse attention; odd layers are banded."""
        return self.attention_pattern == "alternating" and layer % 2 == 1

    def validate(self) -> None:
        """Raise a one-line ConfigError naming the first impossible field."""
        check_types(self, source="model")
        positive = {"vocab_size": self.vocab_size, "attention_window": self.attention_window}
        for name in ("n_layer", "n_head", "d_model", "block_size"):
            positive[name] = getattr(self, name)
        for name, value in positive.items():
            if value is not None and value <= 0:
                raise ConfigError(f"{name}={value} must be positive")
        if self.d_model is not None and self.n_head is not None and self.d_model % self.n_head:
            raise ConfigError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if (self.pos_encoding == "rope" and self.d_model and self.n_head
                and (self.d_model // self.n_head) % 2):
            raise ConfigError(
                f"pos_encoding='rope' needs an even head dim; got d_model/n_head = {self.d_model // self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must be in [0, 1)")
        if self.resid_dropout is not None and not 0.0 <= self.resid_dropout < 1.0:
            raise ConfigError(f"resid_dropout={self.resid_dropout} must be in [0, 1)")
        if self.mlp_expansion <= 0:
            raise ConfigError(f"mlp_expansion={self.mlp_expansion} must be positive")
        if self.mlp_hidden_size is not None and self.mlp_hidden_size <= 0:
            raise ConfigError(f"mlp_hidden_size={self.mlp_hidden_size} must be positive")
        if self.norm_eps <= 0:
            raise ConfigError(f"norm_eps={self.norm_eps} must be positive")
        if self.rope_theta <= 0:
            raise ConfigError(f"rope_theta={self.rope_theta} must be positive")
        if self.preset is not None:
            preset_sizes(self.preset)


@dataclass
class SummaryConfig:
    """`mlproject summary`: which presets and versions to build and the context they are timed at."""

    presets: list[str] = field(default_factory=lambda: list(PRESETS), help="model presets to build")
    model_versions: list[str] = field(default_factory=lambda: ["gpt2", "gpt3"], help="model versions of each preset")
    block_size: int = field(256, help="context length of the timed training step")
    dataset: str = field("pydocs", help="count parameters at this dataset's vocabulary (see `mlproject datasets`)")
    vocab_size: int | None = field(None, help="count parameters at this vocabulary instead of the dataset's")

    def validate(self) -> None:
        check_types(self, source="summary")
        if self.vocab_size is not None and self.vocab_size < 1:
            raise ConfigError(f"summary: vocab_size={self.vocab_size} must be positive")


@dataclass
class HFImportConfig:
    """`mlproject import-hf`: a local Hugging Face folder converted to one of our checkpoints."""

    model_dir: str = field(help="a save_pretrained folder")
    output: str = field(help="checkpoint file to write")

    def validate(self) -> None:
        check_types(self, source="import-hf")


@dataclass
class OriginalImportConfig:
    """`mlproject import-original`: a checkpoint of the original suite converted to one of ours."""

    checkpoint: str = field(help="the original's checkpoint (<name>.last.pt, or a research run's last.pt)")
    output: str = field(help="checkpoint file to write")
    run_config: str | None = field(
        None, help="the run's <run>_config.json, for a checkpoint that holds no run_config "
                   "(the original's best checkpoint <ckpt-name>)")

    def validate(self) -> None:
        check_types(self, source="import-original")
