"""`MlprojectGPTConfig`: the transformers config of an exported mlproject GPT.

It carries our `GPTConfig` fields whole under `gpt` (config.json shows them as trained), and
the sizes transformers tools look for under their usual names.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from mlproject.model.config import GPTConfig


class MlprojectGPTConfig(PretrainedConfig):
    model_type = "mlproject_gpt"

    def __init__(self, gpt: dict[str, Any] | None = None, **kwargs: Any):
        self.gpt = dict(gpt or {})
        if self.gpt:  # the names pipelines and harnesses read (context length, widths)
            cfg = self.gpt_config()
            kwargs.update(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer,
                          num_attention_heads=cfg.n_head, max_position_embeddings=cfg.block_size)
        super().__init__(**kwargs)

    def gpt_config(self) -> GPTConfig:
        """Our resolved `GPTConfig` (validated as a training run's is)."""
        return GPTConfig(**self.gpt).resolved()
