"""Bits per byte: measured bytes per token, and a figure that does not depend on the tokenizer."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mlproject.data.bpb import bits_per_byte, token_byte_lengths
from mlproject.data.tokenizer import EOT, train_tokenizer
from mlproject.training.distributed import DistInfo
from mlproject.training.evaluation import eval_windows, evaluate

DOCS = ["def add(a, b):\n    return a + b\n", "Ünïcödé text: naïve café, 東京, emoji 🙂 and plain ASCII.",
        "The quick brown fox jumps over the lazy dog. " * 3, "x = [i * i for i in range(10)]  # squares"]


def tokenizer(vocab_size: int):
    return train_tokenizer(DOCS * 20, vocab_size)


class UniformBytes(torch.nn.Module):
    """A model that gives each next token the probability of its bytes drawn uniformly:
    256 ** -bytes (the rest of the mass spread over the other tokens). It reads the true next
    token from the stream it is evaluated on, so its log-likelihood is -bytes * ln 256 exactly."""

    def __init__(self, stream: np.ndarray, byte_lengths: np.ndarray, vocab: int, block_size: int) -> None:
        super().__init__()
        self.stream, self.lengths, self.vocab = stream, byte_lengths, vocab
        self.config = SimpleNamespace(block_size=block_size)

    def forward(self, x: torch.Tensor):
        # Window inputs are stream[s : s + T]; find each window's start to know its targets.
        B, T = x.shape
        logits = torch.empty(B, T, self.vocab, dtype=torch.float64)
        for b in range(B):
            start = next(s for s in range(len(self.stream) - T) if np.array_equal(self.stream[s:s + T], x[b].numpy()))
            for t in range(T):
                target = int(self.stream[start + t + 1])
                p = 256.0 ** -float(self.lengths[target])
                row = torch.full((self.vocab,), (1 - p) / (self.vocab - 1), dtype=torch.float64)
                row[target] = p
                logits[b, t] = row.clamp_min(1e-300).log()
        return logits, None


def encode(tok, docs) -> np.ndarray:
    eot = tok.token_to_id(EOT)
    return np.array([i for d in docs for i in [*tok.encode(d).ids, eot]], dtype=np.int64)


@pytest.mark.parametrize("vocab_size", [258, 300, 600])
def test_token_bytes_add_up_to_the_utf8_bytes_of_the_text(vocab_size):
    tok = tokenizer(vocab_size)
    lengths = token_byte_lengths(tok)
    for doc in DOCS:
        assert lengths[tok.encode(doc).ids].sum() == len(doc.encode("utf-8"))
    assert lengths[tok.token_to_id(EOT)] == 0  # document separators are not text


@pytest.mark.parametrize("vocab_size", [258, 400, 700])
def test_a_uniform_byte_model_scores_8_bits_per_byte_whatever_the_tokenization(vocab_size):
    tok = tokenizer(vocab_size)
    lengths = token_byte_lengths(tok)
    stream = encode(tok, DOCS)
    block = 16
    model = UniformBytes(stream, lengths, tok.get_vocab_size(), block)
    starts = eval_windows(len(stream), block, batch_size=2, eval_batches=0)
    metrics = evaluate(model, stream, starts, block, 2, torch.device("cpu"), None, DistInfo(),
                       torch.from_numpy(lengths))
    assert metrics["val_bpb"] == pytest.approx(8.0, abs=1e-5)  # float32 logits
    # the per-token loss is not invariant: it grows with the bytes each token covers
    covered = lengths[np.concatenate([stream[s + 1:s + 1 + block] for s in starts.tolist()])]
    assert metrics["val_loss"] == pytest.approx(covered.mean() * math.log(256), rel=1e-5)


def test_bits_per_byte_is_nats_over_ln2_bytes():
    assert bits_per_byte(8 * math.log(2) * 100, 100) == pytest.approx(8.0)
    assert math.isnan(bits_per_byte(1.0, 0))
