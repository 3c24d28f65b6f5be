"""The GPT model: attention patterns, positions, variants, KV cache and accounting."""

from __future__ import annotations

import math

import pytest
import torch

from mlproject.errors import MlprojectError
from mlproject.model.config import PRESETS, GPTConfig
from mlproject.model.gpt import GPT, CausalSelfAttention, MLP, SwiGLUMLP, apply_rope, causal_mask, rope_tables

VOCAB = 64
WINDOW = 4


def tiny(**overrides) -> GPTConfig:
    base = dict(preset=None, n_layer=2, n_head=2, d_model=32, block_size=32, vocab_size=VOCAB,
                attention_window=WINDOW)
    return GPTConfig(**{**base, **overrides})


def build(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(tiny(**overrides)).eval()


# every architecture axis at least once; gpt3 layers are dense/banded alternating
VARIANTS = {
    "gpt2": {},
    "gpt3": {"model_version": "gpt3"},
    "gpt3-rope": {"model_version": "gpt3", "pos_encoding": "rope"},
    "gpt3-manual": {"model_version": "gpt3", "attention_impl": "manual"},
    "rmsnorm-swiglu-nopos": {"norm_type": "rmsnorm", "mlp_type": "swiglu", "pos_encoding": "none", "bias": False},
    "untied-exact-gelu": {"tie_embeddings": False, "gelu_approximate": "none"},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_changing_a_token_never_changes_earlier_logits(variant):
    model = build(**VARIANTS[variant])
    idx = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    t = 15
    changed = idx.clone()
    changed[:, t] = (changed[:, t] + 1) % VOCAB
    with torch.no_grad():
        before, _ = model(idx)
        after, _ = model(changed)
    assert torch.allclose(before[:, :t], after[:, :t], atol=1e-6)
    assert not torch.allclose(before[:, t:], after[:, t:], atol=1e-4)


@pytest.mark.parametrize("model_version", ["gpt2", "gpt3"])
@pytest.mark.parametrize("pos_encoding", ["learned", "rope"])
def test_manual_and_sdpa_attention_give_the_same_logits(model_version, pos_encoding):
    sdpa = build(model_version=model_version, pos_encoding=pos_encoding, attention_impl="sdpa")
    manual = build(model_version=model_version, pos_encoding=pos_encoding, attention_impl="manual")
    manual.load_state_dict(sdpa.state_dict())
    idx = torch.randint(0, VOCAB, (2, 20))
    with torch.no_grad():
        assert torch.allclose(sdpa(idx)[0], manual(idx)[0], atol=1e-5)


def test_gpt3_alternates_dense_and_banded_layers_and_dense_pattern_turns_banding_off():
    gpt3 = build(model_version="gpt3", n_layer=4)
    assert [block.attn.banded for block in gpt3.transformer.h] == [False, True, False, True]
    dense = build(model_version="gpt3", n_layer=4, attention_pattern="dense")
    assert not any(block.attn.banded for block in dense.transformer.h)


def test_gpt3_defaults_to_a_2048_context_and_gpt2_to_1024():
    assert GPTConfig(model_version="gpt3").resolved().block_size == 2048
    assert GPTConfig(model_version="gpt2").resolved().block_size == 1024


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_banded_attention_ignores_tokens_beyond_the_window(impl):
    torch.manual_seed(0)
    attn = CausalSelfAttention(tiny(model_version="gpt3", attention_impl=impl).resolved(), layer=1).eval()
    assert attn.banded
    T, t = 16, 12
    mask = causal_mask(0, T, WINDOW)
    x = torch.randn(1, T, 32)
    outside, inside = x.clone(), x.clone()
    outside[:, t - WINDOW] += 1.0      # just out of the window of query t
    inside[:, t - WINDOW + 1] += 1.0   # the oldest key query t still attends
    with torch.no_grad():
        y, y_outside, y_inside = attn(x, mask), attn(outside, mask), attn(inside, mask)
    assert torch.allclose(y[:, t], y_outside[:, t], atol=1e-6)
    assert not torch.allclose(y[:, t], y_inside[:, t], atol=1e-4)


def test_dense_attention_sees_tokens_beyond_the_window():
    torch.manual_seed(0)
    attn = CausalSelfAttention(tiny(model_version="gpt3").resolved(), layer=0).eval()
    assert not attn.banded
    x = torch.randn(1, 16, 32)
    far = x.clone()
    far[:, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(attn(x)[:, 15], attn(far)[:, 15], atol=1e-4)


def test_causal_mask_with_a_window_is_a_band_below_the_diagonal():
    mask = causal_mask(2, 3, window=2)  # queries at positions 2, 3, 4 over keys 0..4
    expected = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_rope_attention_scores_depend_only_on_relative_positions():
    hs, T, shift = 16, 10, 7
    cos, sin = rope_tables(hs, T + shift)
    q, k = torch.randn(1, 2, T, hs), torch.randn(1, 2, T, hs)

    def scores(start):
        c, s = cos[start:start + T], sin[start:start + T]
        return apply_rope(q, c, s) @ apply_rope(k, c, s).transpose(-2, -1)

    assert torch.allclose(scores(0), scores(shift), atol=1e-5)
    assert not torch.allclose(scores(0), q @ k.transpose(-2, -1), atol=1e-3)  # rope did rotate


@pytest.mark.parametrize("model_version", ["gpt2", "gpt3"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(model_version):
    plain = build(model_version=model_version, dropout=0.1).train()
    recomputed = build(model_version=model_version, dropout=0.1, gradient_checkpointing=True).train()
    recomputed.load_state_dict(plain.state_dict())
    calls = []
    recomputed.transformer.h[0].register_forward_pre_hook(lambda *_: calls.append(1))
    idx = torch.randint(0, VOCAB, (2, 20))
    losses = []
    for model in (plain, recomputed):
        torch.manual_seed(3)  # same dropout masks
        _, loss = model(idx, idx)
        loss.backward()
        losses.append(loss)
    assert len(calls) == 2  # the block ran again during backward
    assert torch.allclose(losses[0], losses[1], atol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), recomputed.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


@pytest.mark.parametrize("d_model", [768, 1024])
def test_swiglu_mlp_has_the_parameter_count_of_the_gelu_mlp_within_two_percent(d_model):
    def count(mlp_type):
        module = (SwiGLUMLP if mlp_type == "swiglu" else MLP)(
            tiny(d_model=d_model, n_head=8, mlp_type=mlp_type, bias=False).resolved())
        return sum(p.numel() for p in module.parameters())

    gelu, swiglu = count("gelu"), count("swiglu")
    assert abs(swiglu - gelu) / gelu < 0.02


def test_tied_embeddings_share_storage_and_untied_do_not():
    tied = build()
    assert tied.lm_head.weight is tied.transformer.wte.weight
    untied = build(tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.transformer.wte.weight.data_ptr()
    assert untied.num_params() == tied.num_params() + VOCAB * 32


def test_ties_survive_meta_construction_and_init_weights():
    with torch.device("meta"):
        model = GPT(tiny(pos_encoding="rope"))
    model.to_empty(device="cpu")
    model.init_weights()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert torch.allclose(model.rope_cos, rope_tables(16, 32)[0])


@pytest.mark.parametrize("model_version", ["gpt2", "gpt3"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds_with_its_sizes(preset, model_version):
    with torch.device("meta"):  # sizes without allocating memory
        model = GPT(GPTConfig(model_version=model_version, preset=preset))
    n_layer, n_head, d_model = PRESETS[preset]
    assert (len(model.transformer.h), model.config.n_head, model.config.d_model) == (n_layer, n_head, d_model)
    # per block: 12 d^2 weights + 13 d biases/norm params (GPT-2 layout), plus embeddings and ln_f
    expected = (n_layer * (12 * d_model ** 2 + 13 * d_model) + 2 * d_model
                + (50304 + model.config.block_size) * d_model)
    assert model.num_params() == expected


def test_gpt2_124m_has_gpt2_smalls_parameter_count():
    with torch.device("meta"):
        model = GPT(GPTConfig(preset="gpt2-124m", vocab_size=50257))
    assert model.num_params() == 124_439_808  # the published GPT-2 small count (tied head)


@pytest.mark.parametrize("variant", VARIANTS)
def test_kv_cache_incremental_logits_equal_full_forward_logits(variant):
    model = build(**VARIANTS[variant], block_size=24)
    idx = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_kv_cache(batch_size=2, max_len=24)
        pieces = [model(idx[:, :5], kv_cache=cache)[0]]       # prefill
        pieces.append(model(idx[:, 5:9], kv_cache=cache)[0])  # a chunk after cached tokens
        for t in range(9, 24):                                # one token at a time, past the window
            pieces.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    assert cache.length == 24
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_last_logits_equal_the_last_position_of_all_logits():
    model = build()
    idx = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        last, _ = model(idx, logits="last")
        full, _ = model(idx)
    assert last.shape == (2, 1, VOCAB)
    assert torch.allclose(last, full[:, -1:], atol=1e-6)


def test_loss_is_cross_entropy_ignoring_minus_100_with_label_smoothing():
    model = build()
    idx = torch.randint(0, VOCAB, (2, 12))
    targets = idx.clone()
    targets[:, :4] = -100
    logits, loss = model(idx, targets, label_smoothing=0.1)
    expected = torch.nn.functional.cross_entropy(logits[:, 4:].reshape(-1, VOCAB), idx[:, 4:].reshape(-1),
                                                 label_smoothing=0.1)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_loss_at_initialisation_is_near_log_vocab():
    model = build()
    idx, targets = torch.randint(0, VOCAB, (2, 8, 32))  # targets independent of the inputs
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(VOCAB)) < 0.1


def test_sequences_longer_than_block_size_are_rejected():
    model = build(block_size=8)
    with pytest.raises(MlprojectError, match="block_size=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_kv_cache_overflow_is_rejected():
    model = build()
    cache = model.new_kv_cache(1, 4)
    model(torch.zeros(1, 4, dtype=torch.long), kv_cache=cache)
    with pytest.raises(MlprojectError, match="max_len=4"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)


def test_residual_projections_are_initialised_with_a_smaller_std():
    model = build(n_layer=8, d_model=256, n_head=4)
    c_fc = model.transformer.h[0].mlp.c_fc.weight.std().item()
    c_proj = model.transformer.h[0].mlp.c_proj.weight.std().item()
    assert abs(c_fc - 0.02) < 0.002
    assert abs(c_proj - 0.02 / math.sqrt(2 * 8)) < 0.001


def test_optim_groups_decay_matrices_and_embeddings_only():
    model = build(tie_embeddings=False)
    decay, no_decay = model.optim_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert any(p is model.transformer.wte.weight for p in decay["params"])


def test_num_params_without_embeddings_drops_the_lookup_tables():
    model = build()
    assert model.num_params() - model.num_params(exclude_embeddings=True) == (VOCAB + 32) * 32


def test_flops_per_token_follows_6n_plus_12_lhqt():
    gpt2 = build(n_layer=4)
    n = gpt2.num_params(exclude_embeddings=True) + VOCAB * 32  # the tied head is a matmul per token
    assert gpt2.flops_per_token() == 6 * n + 12 * 4 * 2 * 16 * 32
    gpt3 = build(n_layer=4, model_version="gpt3")  # two banded layers attend WINDOW keys
    assert gpt3.flops_per_token() == 6 * n + 12 * 2 * 16 * (2 * 32 + 2 * WINDOW)


def test_resid_dropout_sets_the_residual_branches_only_and_defaults_to_dropout():
    def rates(**values):
        block = GPT(GPTConfig(preset=None, n_layer=1, n_head=2, d_model=16, block_size=8, vocab_size=11,
                              **values)).transformer.h[0]
        return block.attn.attn_dropout.p, block.attn.resid_dropout.p, block.mlp.dropout.p

    assert rates(dropout=0.1) == (0.1, 0.1, 0.1)
    assert rates(dropout=0.1, resid_dropout=0.3) == (0.1, 0.3, 0.3)
    assert rates(dropout=0.0, resid_dropout=0.2, mlp_type="swiglu") == (0.0, 0.2, 0.2)


def test_resid_dropout_drops_in_training_and_leaves_eval_logits_unchanged():
    torch.manual_seed(0)
    base = GPT(GPTConfig(preset=None, n_layer=2, n_head=2, d_model=16, block_size=8, vocab_size=11))
    dropping = GPT(GPTConfig(preset=None, n_layer=2, n_head=2, d_model=16, block_size=8, vocab_size=11,
                             resid_dropout=0.5))
    dropping.load_state_dict(base.state_dict())
    idx = torch.randint(0, 11, (2, 8))
    with torch.no_grad():
        assert torch.equal(base.eval()(idx)[0], dropping.eval()(idx)[0])
        dropping.train()
        assert not torch.allclose(base(idx)[0], dropping(idx)[0])
