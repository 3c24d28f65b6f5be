"""The models the suite compares: our GPT and Hugging Face's GPT2LMHeadModel at the same sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlproject.model.config import PRESETS, GPTConfig


@dataclass(frozen=True)
class Size:
    """Model and batch sizes of one comparison."""

    name: str
    n_layer: int
    n_head: int
    d_model: int
    block_size: int = 256
    batch_size: int = 8
    vocab_size: int = 16384

    @classmethod
    def preset(cls, name: str, **overrides: int) -> Size:
        n_layer, n_head, d_model = PRESETS[name]
        return cls(name, n_layer, n_head, d_model, **overrides)

    def gpt_config(self, model_version: str = "gpt2", **fields: Any) -> GPTConfig:
        """Our model at this size, fp32, no dropout."""
        return GPTConfig(model_version=model_version, preset=None, n_layer=self.n_layer, n_head=self.n_head,
                         d_model=self.d_model, block_size=self.block_size, vocab_size=self.vocab_size,
                         dropout=0.0, **fields).resolved()


# The figures' sizes; --quick shrinks them so the whole suite runs in well under a minute.
NANO = Size.preset("nano")
SMALL = Size.preset("small")
QUICK_NANO = Size("nano", n_layer=2, n_head=2, d_model=64, block_size=32, batch_size=2, vocab_size=512)
QUICK_SMALL = Size("small", n_layer=2, n_head=4, d_model=128, block_size=32, batch_size=2, vocab_size=512)


def hf_gpt2(size: Size, block_size: int | None = None) -> Any:
    """`transformers.GPT2LMHeadModel` with SDPA attention, no dropout, tied embeddings, random init."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=size.vocab_size, n_positions=block_size or size.block_size, n_embd=size.d_model,
                        n_layer=size.n_layer, n_head=size.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        layer_norm_epsilon=1e-5, bos_token_id=None, eos_token_id=None,
                        attn_implementation="sdpa")
    model = GPT2LMHeadModel(config)
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"Hugging Face picked attention {model.config._attn_implementation!r}, not sdpa")
    return model
