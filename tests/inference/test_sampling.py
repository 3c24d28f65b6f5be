"""Sampling strategies: temperature, top-k, top-p, repetition penalty."""

from __future__ import annotations

import torch

from mlproject.inference.sampling import apply_repetition_penalty, sample_next, top_k_filter, top_p_filter


def test_temperature_zero_is_greedy():
    logits = torch.tensor([[0.1, 3.0, 2.9, -1.0], [5.0, 0.0, 0.0, 0.0]])
    assert sample_next(logits, temperature=0).tolist() == [1, 0]


def test_same_seed_same_samples():
    logits = torch.randn(4, 50)
    a = sample_next(logits, generator=torch.Generator().manual_seed(7))
    b = sample_next(logits, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_top_k_never_samples_outside_the_k_most_likely():
    torch.manual_seed(0)
    logits = torch.randn(8, 100)
    allowed = torch.topk(logits, 5, dim=-1).indices
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        tokens = sample_next(logits, top_k=5, temperature=2.0, generator=g)
        assert (allowed == tokens.unsqueeze(1)).any(dim=1).all()


def test_top_k_filter_keeps_exactly_k():
    kept = torch.isfinite(top_k_filter(torch.randn(3, 20), 4)).sum(dim=1)
    assert kept.tolist() == [4, 4, 4]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(top_p_filter(probs.log(), 0.75))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.75 <= 0.5 + 0.3


def test_top_p_always_keeps_the_most_likely_token():
    probs = torch.tensor([[0.1, 0.9]])
    assert torch.isfinite(top_p_filter(probs.log(), 0.01)).tolist() == [[False, True]]


def test_top_p_samples_stay_within_the_nucleus():
    torch.manual_seed(1)
    logits = torch.randn(4, 64) * 3
    nucleus = torch.isfinite(top_p_filter(logits, 0.6))
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        tokens = sample_next(logits, top_p=0.6, generator=g)
        assert nucleus.gather(1, tokens.unsqueeze(1)).all()


def test_repetition_penalty_lowers_seen_tokens_of_either_sign():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    seen = torch.tensor([[0, 1, 1]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.5]]


def test_repetition_penalty_of_one_changes_nothing():
    logits = torch.randn(2, 10)
    assert torch.equal(apply_repetition_penalty(logits, torch.tensor([[1, 2], [3, 4]]), 1.0), logits)
