"""Long documents are cut into pieces before tokenizing: at places the byte-level BPE cuts anyway,
so the tokenizer and the ids are those of the whole documents, and the data stage's peak memory
stays within the bound it prints, whatever the line lengths."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlproject.data import pieces as pieces_module
from mlproject.data.cache import TokenCacheWriter
from mlproject.data.config import DataConfig, DataRuntimeConfig
from mlproject.data.fast_encode import fast_encoder, hf_encoder
from mlproject.data.pieces import document_pieces, pieces
from mlproject.data.prepare import prepare_data
from mlproject.data.tokenizer import train_tokenizer

WORDS = ["the", "cat", "déjà", "vu", "naïve", "日本語", "x=1;", "(a,", "b)", "42", "it's", "€uro", "🙂ok"]


def _text(n_words: int, seed: int = 0) -> str:
    """Words with every kind of whitespace between them: single and double spaces, tabs, newlines."""
    rng = random.Random(seed)
    return "".join(rng.choice(WORDS) + rng.choice([" ", " ", " ", "  ", "\t", "\n", " \n "]) for _ in range(n_words))


def test_pieces_join_back_to_the_text_and_hold_at_most_the_limit():
    text = _text(2000)
    for limit in (1, 5, 64, 1000):
        parts = list(pieces(text, limit))
        assert "".join(parts) == text
        assert all(0 < len(p) <= limit for p in parts)
    assert list(pieces("short", 64)) == ["short"]


def test_cuts_fall_where_a_whitespace_character_follows_a_non_whitespace_one():
    parts = list(pieces(_text(2000), 64))
    assert len(parts) > 10
    for before, after in zip(parts, parts[1:]):
        assert not before[-1].isspace() and after[0] in " \t\n\r"


def test_a_run_without_whitespace_is_cut_at_the_limit_between_characters():
    text = "日本語🙂" * 50  # multi-byte characters: a cut is between code points, never inside their UTF-8
    parts = list(pieces(text, 7))
    assert [len(p) for p in parts[:-1]] == [7] * (len(parts) - 1)
    assert b"".join(p.encode("utf-8") for p in parts) == text.encode("utf-8")


def test_document_pieces_mark_the_last_piece_of_each_document():
    got = list(document_pieces([("train", "ab cd ef"), ("val", "x")], 4))
    assert got == [("train", "ab", False), ("train", " cd", False), ("train", " ef", True), ("val", "x", True)]


def test_a_document_cut_into_pieces_encodes_to_the_ids_of_the_whole():
    tokenizer = train_tokenizer([_text(3000, seed=1)], 400)
    text = _text(5000, seed=2)
    dtype = np.dtype(np.uint16)
    slow = hf_encoder(tokenizer, dtype)
    fast = fast_encoder(tokenizer, dtype, [text[:2000]])
    assert fast is not None
    whole = slow([text])[0]
    for encode in (slow, fast):
        for limit in (16, 300):
            assert np.array_equal(np.concatenate(encode(list(pieces(text, limit)))), whole), (encode, limit)


def test_a_tokenizer_trained_on_pieces_is_the_one_trained_on_whole_documents():
    docs = [_text(3000, seed=s) for s in range(3)]
    whole = train_tokenizer(docs, 400)
    cut = train_tokenizer((p for _, p, _ in document_pieces(("train", d) for d in docs)), 400)
    assert cut.to_str() == whole.to_str()


def test_a_document_written_in_pieces_is_one_document_with_one_separator(tmp_path):
    writer = TokenCacheWriter(tmp_path / "train.bin", vocab_size=512, eot_id=0, meta={})
    writer.write([[5], [6, 7]], text_bytes=3, last_continues=True)  # the second document goes on
    writer.write([[8], [9]], text_bytes=2)
    cache = writer.close()
    assert cache.tokens.tolist() == [5, 0, 6, 7, 8, 0, 9, 0] and cache.num_docs == 3


def _long_line_corpus(path: Path, mb: float) -> Path:
    """One line of `mb` MB (one JSON record), then short records for a validation split."""
    rng = random.Random(0)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9))) for _ in range(3000)]
    vocab += WORDS
    words, size = [], 0
    while size < mb * 1e6:
        words.append(rng.choice(vocab))
        size += len(words[-1].encode("utf-8")) + 1
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"text": " ".join(words)}) + "\n")
        del words
        for _ in range(40):
            f.write(json.dumps({"text": " ".join(rng.choice(vocab) for _ in range(50))}) + "\n")
    return path


def test_the_caches_of_long_documents_are_the_same_whatever_the_piece_size(tmp_path, monkeypatch):
    corpus = _long_line_corpus(tmp_path / "corpus.jsonl", 0.2)

    def prepare(cache: str):
        return prepare_data(DataConfig(dataset="local_jsonl", local_path=str(corpus), vocab_size=400),
                            DataRuntimeConfig(cache_dir=str(tmp_path / cache), num_workers=2), log=lambda _: None)

    whole = prepare("whole")
    monkeypatch.setattr(pieces_module, "PIECE_CHARS", 997)  # the long line in ~200 pieces, some across batches
    monkeypatch.setattr("mlproject.data.prepare.DOCS_PER_BATCH", 16)
    cut = prepare("cut")
    assert cut.tokenizer.to_str() == whole.tokenizer.to_str()
    for split in ("train", "val"):
        a, b = getattr(whole, split), getattr(cut, split)
        assert np.array_equal(a.tokens, b.tokens) and a.num_docs == b.num_docs, split
        assert a.header["text_bytes"] == b.header["text_bytes"]


# A child process: its peak RSS (VmHWM, which starts afresh at exec, unlike ru_maxrss) above its RSS
# before preparing, and the bound the data stage printed.
_CHILD = """
import sys
from mlproject.data.config import DataConfig, DataRuntimeConfig
from mlproject.data.prepare import prepare_data

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024
before = status("VmRSS")
prepare_data(DataConfig(dataset="local_jsonl", local_path=sys.argv[1], vocab_size=400),
             DataRuntimeConfig(cache_dir=sys.argv[2], num_workers=2))
print(f"GROWTH_MB {status('VmHWM') - before:.1f}")
"""


def _peak_against_bound(tmp_path: Path, mb: float) -> None:
    corpus = _long_line_corpus(tmp_path / "corpus.jsonl", mb)
    done = subprocess.run([sys.executable, "-c", _CHILD, str(corpus), str(tmp_path / "cache")], capture_output=True,
                          text=True, timeout=600, env=os.environ.copy())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    bound = re.search(r"memory bounded by (\d+) MB plus the document being read \(up to (\d+)x its size\)", done.stdout)
    assert bound, done.stdout
    growth = float(re.search(r"GROWTH_MB (\S+)", done.stdout).group(1))
    allowed = int(bound.group(1)) + int(bound.group(2)) * corpus.stat().st_size / 2**20
    assert growth <= allowed, f"peak RSS grew by {growth:.0f} MB; the printed bound allows {allowed:.0f} MB"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
def test_preparing_a_4_mb_single_line_corpus_stays_within_the_printed_bound(tmp_path):
    _peak_against_bound(tmp_path, 4)  # took 970 MB (of a 252 MB bound) before documents were cut


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
def test_preparing_a_50_mb_single_line_corpus_stays_within_the_printed_bound(tmp_path):
    _peak_against_bound(tmp_path, 50)
