"""`MlprojectGPTForCausalLM`: our GPT (`model/gpt.py`, unchanged) behind transformers' causal-LM API.

The forward pass is the suite's own, so the logits equal the training run's. Generation
recomputes the whole context (its last block_size tokens) each step: no transformers KV cache.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from mlproject.model.gpt import GPT, rope_tables
from mlproject.model.remote_code.configuration_mlproject_gpt import MlprojectGPTConfig


class MlprojectGPTForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = MlprojectGPTConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"

    def __init__(self, config: MlprojectGPTConfig):
        super().__init__(config)
        self.model = GPT(config.gpt_config())
        if self.model.config.tie_embeddings:  # one tensor, stored once in model.safetensors
            self._tied_weights_keys = {"model.lm_head.weight": "model.transformer.wte.weight"}
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: torch.nn.Module) -> None:
        # Every weight comes from model.safetensors; only GPT's computed buffers (the RoPE
        # tables, not saved) are filled here, when transformers builds the model empty first.
        if isinstance(module, GPT) and module.config.pos_encoding == "rope":
            cos, sin = rope_tables(module.config.head_dim, module.config.block_size, module.config.rope_theta)
            module.rope_cos.copy_(cos)
            module.rope_sin.copy_(sin)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.transformer.wte

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.model.lm_head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> CausalLMOutput:
        # GPT attends causally over the whole row from position 0 (cache arguments are ignored):
        # padding after a row's tokens changes nothing before it, padding in front would
        if attention_mask is not None and bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
            raise ValueError("MlprojectGPTForCausalLM: left padding (attention_mask with zeros before tokens) is "
                             "not supported; pad on the right or pass rows one at a time")
        logits, _ = self.model(input_ids)
        loss = None
        if labels is not None:  # transformers' convention: labels are the inputs, shifted here
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                     labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
        return {"input_ids": input_ids[:, -self.model.config.block_size:]}
