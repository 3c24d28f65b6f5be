"""Hugging Face import: GPT-2 and Llama models give the same logits as our GPT after `from_hf`."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from mlproject.errors import MlprojectError
from mlproject.model.hf import from_hf, load_hf_dir

VOCAB = 96


def gpt2(**overrides) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = dict(vocab_size=VOCAB, n_positions=64, n_layer=2, n_head=2, n_embd=32,
                  bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(GPT2Config(**{**config, **overrides})).eval()


def llama(**overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = dict(vocab_size=VOCAB, max_position_embeddings=64, num_hidden_layers=2, num_attention_heads=4,
                  hidden_size=32, intermediate_size=80, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(LlamaConfig(**{**config, **overrides})).eval()


def max_logit_difference(hf_model) -> float:
    ours = from_hf(hf_model)
    idx = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf_model(idx).logits
        assert expected.std() > 0.01  # a random model, not a constant one
        return (ours(idx)[0] - expected).abs().max().item()


@pytest.mark.parametrize("sizes", [
    dict(n_layer=1, n_head=1, n_embd=16),
    dict(n_layer=2, n_head=2, n_embd=32),
    dict(n_layer=3, n_head=4, n_embd=64, n_inner=96),
    dict(n_layer=2, n_head=2, n_embd=32, activation_function="gelu", layer_norm_epsilon=1e-3),
    dict(n_layer=2, n_head=2, n_embd=32, tie_word_embeddings=False),
])
def test_gpt2_logits_match_after_import(sizes):
    assert max_logit_difference(gpt2(**sizes)) < 1e-4


@pytest.mark.parametrize("sizes", [
    dict(num_hidden_layers=1, num_attention_heads=2, hidden_size=16, intermediate_size=40),
    dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=80, rope_theta=500.0),
    dict(num_hidden_layers=3, num_attention_heads=4, hidden_size=64, intermediate_size=128, rms_norm_eps=1e-5),
    dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=80, tie_word_embeddings=True),
])
def test_llama_logits_match_after_import(sizes):
    assert max_logit_difference(llama(**sizes)) < 1e-4


def test_imported_gpt2_keeps_the_architecture_and_tying():
    model = from_hf(gpt2(n_inner=96))
    cfg = model.config
    assert (cfg.pos_encoding, cfg.norm_type, cfg.mlp_type, cfg.bias) == ("learned", "layernorm", "gelu", True)
    assert cfg.mlp_hidden == 96
    assert model.lm_head.weight is model.transformer.wte.weight


def test_imported_llama_is_rmsnorm_swiglu_rope_without_bias_and_untied():
    model = from_hf(llama(rope_theta=500.0))
    cfg = model.config
    assert (cfg.pos_encoding, cfg.norm_type, cfg.mlp_type, cfg.bias) == ("rope", "rmsnorm", "swiglu", False)
    assert (cfg.mlp_hidden, cfg.rope_theta, cfg.tie_embeddings) == (80, 500.0, False)
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()


def test_llama_kv_cache_generation_matches_full_forward_after_import():
    model = from_hf(llama())
    idx = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_kv_cache(1, 12)
        steps = [model(idx[:, :4], kv_cache=cache)[0]]
        steps += [model(idx[:, t:t + 1], kv_cache=cache)[0] for t in range(4, 12)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_grouped_query_attention_is_rejected():
    with pytest.raises(MlprojectError, match="num_key_value_heads=2"):
        from_hf(llama(num_key_value_heads=2))


def test_rope_scaling_is_rejected():
    scaled = llama(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    with pytest.raises(MlprojectError, match="rope_type='linear'"):
        from_hf(scaled)


def test_other_model_classes_are_rejected():
    with pytest.raises(MlprojectError, match="cannot import a Linear"):
        from_hf(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("make", [gpt2, llama])
def test_load_hf_dir_reads_a_save_pretrained_folder_offline(make, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf_model = make()
    hf_model.save_pretrained(tmp_path / "model")
    ours = load_hf_dir(tmp_path / "model")
    idx = torch.randint(0, VOCAB, (1, 16))
    with torch.no_grad():
        assert torch.allclose(ours(idx)[0], hf_model(idx).logits, atol=1e-4)


def test_load_hf_dir_rejects_a_folder_without_a_model(tmp_path):
    with pytest.raises(MlprojectError, match="no config.json"):
        load_hf_dir(tmp_path)
