"""GenerateConfig: where the model comes from and how to sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mlproject.config import check_types, field
from mlproject.errors import ConfigError


_MATCH = "must match the checkpoint if given (the model is built from the checkpoint's config)"
_NO_DROPOUT = ("accepted for the original's commands; generation runs without dropout (the model is in eval "
               "mode), so it changes nothing and is not compared with the checkpoint")


@dataclass
class GenerateConfig:
    """Text generation from a run, a `models:/` URI or a checkpoint file."""

    run_id: str | None = field(None, help="MLflow run whose best (else last) checkpoint and tokenizer to use")
    model_uri: str | None = field(None, help="a models:/ URI (LoggedModel or registered model)")
    checkpoint: str | None = field(None, help="a local checkpoint file")
    tokenizer_path: str | None = field(None, help="tokenizer.json (with --checkpoint)")
    prompts: list[str] = field(default_factory=lambda: ["The"], aliases=("--prompt",), split=False,
                               help="prompts, generated as one batch")
    max_new_tokens: int = field(100, help="tokens to generate per prompt")
    temperature: float = field(1.0, help="softmax temperature; 0 means greedy")
    top_k: int | None = field(None, help="sample only from the k most likely tokens")
    top_p: float | None = field(None, help="nucleus sampling: smallest set with this probability mass")
    strategy: Literal["greedy", "sample", "topk", "topp"] | None = field(
        None, help="the original's sampling switch: greedy (temperature 0), sample (full distribution), "
                   "topk (needs --top-k), topp (needs --top-p); a flag that contradicts it is an error")
    repetition_penalty: float = field(1.0, help="> 1 discourages tokens already present (CTRL, Keskar et al. 2019)")
    seed: int | None = field(None, help="sampling seed")
    stop_at_eos: bool = field(True, help="stop a sequence at <|endoftext|>")
    stream: bool | None = field(None, help="print tokens as they come (default: on a terminal)")
    use_ckpt_config: bool = field(True, help="build the model from the checkpoint's stored config (the only way: "
                                             "weights fit only the shape they were trained with); a size flag "
                                             "that contradicts the checkpoint is an error")
    # The original's architecture flags: its generate.py built the model from them; here the
    # model comes from the checkpoint and each one given must match it.
    model_version: Literal["gpt2", "gpt3"] | None = field(None, help=_MATCH)
    block_size: int | None = field(None, help=_MATCH)
    n_layer: int | None = field(None, help=_MATCH)
    n_head: int | None = field(None, help=_MATCH)
    d_model: int | None = field(None, help=_MATCH)
    norm_eps: float | None = field(None, help=_MATCH, aliases=("--layernorm-eps", "--layernorm_eps"))
    mlp_expansion: float | None = field(None, help=_MATCH)
    norm_type: Literal["layernorm", "rmsnorm"] | None = field(None, help=_MATCH)
    mlp_type: Literal["gelu", "swiglu"] | None = field(None, help=_MATCH)
    # "" for unset: in a `X | None` field the value "none" (no positions) would read as unset
    pos_encoding: Literal["", "learned", "rope", "none"] = field("", help=_MATCH)
    attention_impl: Literal["manual", "sdpa"] | None = field(None, help=_MATCH)
    rope_theta: float | None = field(None, help=_MATCH, aliases=("--rope-base", "--rope_base"))
    dropout: float | None = field(None, help=_NO_DROPOUT)
    resid_dropout: float | None = field(None, help=_NO_DROPOUT)
    device: str = field("auto", help="auto, cpu, cuda, mps")

    def validate(self) -> None:
        check_types(self, source="generate")
        sources = [s for s in (self.run_id, self.model_uri, self.checkpoint) if s]
        if len(sources) > 1:
            raise ConfigError("generate: give only one of run_id, model_uri, checkpoint")
        if self.temperature < 0:
            raise ConfigError(f"temperature={self.temperature} must be >= 0")
        if self.top_k is not None and self.top_k <= 0:
            raise ConfigError(f"top_k={self.top_k} must be positive")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p={self.top_p} must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty={self.repetition_penalty} must be positive")
        if self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens} must be >= 0")
        if not self.use_ckpt_config:
            raise ConfigError("generate: use_ckpt_config=false is not supported: a checkpoint's weights fit only "
                              "the config stored with them; drop the flag (size flags are checked against it)")
        self._apply_strategy()

    def _apply_strategy(self) -> None:
        """Map `strategy` onto temperature/top_k/top_p; a flag that contradicts it is an error."""
        if self.strategy is None:
            return
        wants = {"greedy": (), "sample": (), "topk": ("top_k",), "topp": ("top_p",)}[self.strategy]
        for name in ("top_k", "top_p"):
            value = getattr(self, name)
            if value is not None and name not in wants:
                raise ConfigError(f"generate: {name}={value} contradicts strategy={self.strategy!r}; drop it or use "
                                  f"strategy={'topk' if name == 'top_k' else 'topp'}")
            if value is None and name in wants:
                raise ConfigError(f"generate: strategy={self.strategy!r} needs {name} (--{name.replace('_', '-')})")
        if self.strategy == "greedy":
            # 1.0 is the default, indistinguishable from not given; any other sampling temperature
            # asks for sampling, which greedy decoding never does
            if self.temperature not in (0.0, 1.0):
                raise ConfigError(f"generate: temperature={self.temperature} contradicts strategy='greedy' "
                                  "(greedy ignores temperature); drop it or use strategy=sample")
            self.temperature = 0.0
        elif self.temperature == 0:
            raise ConfigError(f"generate: temperature=0 (greedy) contradicts strategy={self.strategy!r}; "
                              "use strategy=greedy or a positive temperature")
