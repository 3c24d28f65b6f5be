"""Bits per byte: a loss that does not depend on the tokenizer.

A run's `val_loss` is nats per token of its own BPE. Two tokenizers cut the same text into
different numbers of tokens, so per-token losses rank models partly by their tokenizers. The
text itself is fixed, though: its UTF-8 bytes. Over an evaluated text of B bytes cut into N
tokens with per-token losses l_i (nats),

    total information  = sum_i l_i                      nats
                       = sum_i l_i / ln 2               bits
    bits per byte      = sum_i l_i / (ln 2 * B)
                       = mean_loss * (N / B) / ln 2     (N / B: tokens per byte of this split)

The probability a model assigns to the whole text is the product of its token probabilities
whatever the cut, so bpb compares models across vocabularies, tokenizers and corpora. A model
that gives every byte probability 1/256 scores exactly 8 bits per byte under any tokenization.

B is measured, not estimated: each target token is charged the UTF-8 bytes it decodes to
(byte-level BPE tokens are byte strings, so the charges of a window add up to the bytes of its
text exactly); special tokens such as `<|endoftext|>` separate documents and are 0 bytes.
"""

from __future__ import annotations

import math

import numpy as np
from tokenizers import Tokenizer, decoders

LN2 = math.log(2.0)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (`bytes_to_unicode`): character -> the byte it stands for."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):  # unprintable bytes map to characters from U+0100 on
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each token id stands for (int64, one entry per id); special tokens are 0.

    Byte-level tokenizers (ours, GPT-2's) map each character of a token to one byte. Others
    fall back to the UTF-8 length of the decoded token, exact for tokenizers without merges
    across characters.
    """
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    lengths = np.zeros(max(vocab.values(), default=-1) + 1, dtype=np.int64)
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    byte_level = isinstance(tokenizer.decoder, decoders.ByteLevel)
    alphabet = _byte_decoder()
    for token, index in vocab.items():
        if token in special:
            continue
        if byte_level and all(c in alphabet for c in token):
            lengths[index] = len(token)  # one alphabet character per byte
        else:
            lengths[index] = len(tokenizer.decode([index], skip_special_tokens=False).encode("utf-8"))
    return lengths


def bits_per_byte(total_nats: float, num_bytes: float) -> float:
    """total nats / (ln 2 x UTF-8 bytes); NaN when no byte was evaluated."""
    return total_nats / (LN2 * num_bytes) if num_bytes > 0 else float("nan")
