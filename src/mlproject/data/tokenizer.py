"""Byte-level BPE (GPT-2's scheme, Radford et al. 2019) trained with Hugging Face `tokenizers`.

Byte-level means every string is representable (no unknown token) and, with the ByteLevel
decoder and no normalizer (no lowercasing), decode(encode(text)) == text. Two special tokens:
`<|endoftext|>` separates documents in the token caches and `<|pad|>` pads batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from mlproject.io import atomic_write_bytes
from mlproject.errors import ConfigError

EOT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOT, PAD)
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # every byte plus the specials, before any merge


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE of `vocab_size` tokens (specials included) on `texts`."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise ConfigError(f"vocab_size={vocab_size} is too small; expected at least {MIN_VOCAB_SIZE} "
                          "(256 bytes + 2 special tokens)")
    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False keeps the round trip exact (GPT-2 also encodes without a prefix space).
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # callers wrap `texts` in their own progress bar
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> Path:
    """Write tokenizer.json atomically (concurrent readers never see a partial file)."""
    path = Path(path)
    atomic_write_bytes(path, tokenizer.to_str().encode("utf-8"))
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer.json (ours or any Hugging Face one), with a one-line error if unusable."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"tokenizer_path={str(path)!r} does not exist; expected a tokenizer.json file")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise ConfigError(f"tokenizer_path={str(path)!r} is not a tokenizers JSON file ({exc})") from None
    if tokenizer.token_to_id(EOT) is None:
        raise ConfigError(f"tokenizer {path} has no {EOT} token; documents could not be separated")
    return tokenizer


def special_ids(tokenizer: Tokenizer) -> tuple[int, int]:
    """(eot_id, pad_id); tokenizers without `<|pad|>` (GPT-2's own) pad with `<|endoftext|>`."""
    eot = tokenizer.token_to_id(EOT)
    pad = tokenizer.token_to_id(PAD)
    return eot, eot if pad is None else pad


def tokenizer_hash(path: str | Path) -> str:
    """Short sha256 of the tokenizer.json content: names token caches and is logged with runs."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
