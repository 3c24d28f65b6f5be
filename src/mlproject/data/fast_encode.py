"""Encoding corpora at tiktoken's speed with our own byte-level BPE.

Hugging Face `tokenizers` encodes about 5x slower than tiktoken on the same cores
(benchmarks/README.md). A byte-level BPE with GPT-2's pre-tokenization (ours: ByteLevel with
its regex, no prefix space, no normalizer) is exactly what tiktoken runs: the same regex
splits the text, and merging by the rank of the merged token gives the merges' order. So
the data stage builds a `tiktoken.Encoding` from the tokenizer's merges, maps tiktoken's
ranks back to our ids with one lookup table, and checks on a sample of the corpus that the
ids are the ones `tokenizer.encode` gives; any other tokenizer, a failed check or tiktoken
not installed keeps the `tokenizers` path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
from tokenizers import Tokenizer

# GPT-2's pre-tokenizer regex, as tokenizers' ByteLevel(use_regex=True) applies it
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

Encoder = Callable[[Sequence[str]], list[np.ndarray]]


@cache
def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte -> printable character table, inverted (the ByteLevel alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    order = printable + [b for b in range(256) if b not in printable]
    chars = printable + [256 + n for n in range(256 - len(printable))]  # the others, in byte order
    return {chr(c): b for b, c in zip(order, chars)}


def tiktoken_encoding(tokenizer: Tokenizer):
    """(tiktoken.Encoding, rank -> our id table), or None if tiktoken cannot run this tokenizer."""
    try:
        import tiktoken
    except ImportError:
        return None
    spec = json.loads(tokenizer.to_str())
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    if (model.get("type") != "BPE" or model.get("dropout") or model.get("continuing_subword_prefix")
            or model.get("end_of_word_suffix") or model.get("ignore_merges") or spec.get("normalizer")
            or pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or not pre.get("use_regex", True)):
        return None
    byte_of, vocab = _byte_of_char(), model["vocab"]
    try:
        ranks = {bytes([byte]): rank for rank, byte in enumerate(byte_of.values())}  # the 256 bytes first
        ids = [vocab[ch] for ch in byte_of]  # ids[rank] = our id of that token
        for merge in model["merges"]:
            a, b = merge if isinstance(merge, list) else merge.split(" ")
            token = bytes(byte_of[ch] for ch in a + b)
            if token not in ranks:  # the first merge that makes a token sets its rank
                ranks[token] = len(ranks)
                ids.append(vocab[a + b])
    except KeyError:  # a merge or byte outside the vocabulary: not a plain byte-level BPE
        return None
    encoding = tiktoken.Encoding(f"mlproject-{len(ranks)}", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                 special_tokens={})
    return encoding, np.asarray(ids, dtype=np.uint32)


def hf_encoder(tokenizer: Tokenizer, dtype: np.dtype) -> Encoder:
    """The `tokenizers` path: encode_batch (parallel, releases the GIL), ids as compact arrays."""

    def encode(texts: Sequence[str]) -> list[np.ndarray]:
        # Our separators are explicit <|endoftext|> ids: no tokenizer-added BOS/EOS.
        return [np.asarray(e.ids, dtype=dtype) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    return encode


def fast_encoder(tokenizer: Tokenizer, dtype: np.dtype, sample: Sequence[str]) -> Encoder | None:
    """A tiktoken-backed encoder giving exactly `tokenizer`'s ids on `sample`, else None.

    Texts that contain a special token's string (which `tokenizers` turns into the special id)
    go through `tokenizers`, so the ids stay the same everywhere.
    """
    built = tiktoken_encoding(tokenizer)
    if built is None:
        return None
    encoding, to_id = built
    specials = [t.content for t in tokenizer.get_added_tokens_decoder().values()]
    slow = hf_encoder(tokenizer, dtype)

    def encode(texts: Sequence[str]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for text in texts:
            if any(s in text for s in specials):
                out.extend(slow([text]))
            else:  # encode_to_numpy releases the GIL: threads encode in parallel
                out.append(to_id[encoding.encode_to_numpy(text, disallowed_special=())].astype(dtype, copy=False))
        return out

    expected = slow(sample)
    if any(not np.array_equal(a, b) for a, b in zip(encode(sample), expected)):
        return None
    return encode
