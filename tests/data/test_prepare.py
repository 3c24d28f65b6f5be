"""prepare_data: tokenizer, token caches, reuse, keys, concurrency and the cache file format."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from mlproject.data.cache import FORMAT_VERSION, CorruptTokenCache, TokenCacheWriter, content_hash, open_token_cache
from mlproject.data.config import DataConfig
from mlproject.data.fast_encode import fast_encoder, hf_encoder
from mlproject.data.prepare import prepare_data
from mlproject.data.sources import resolve_corpus
from mlproject.data.tokenizer import EOT, PAD, load_tokenizer
from mlproject.errors import ConfigError, MlprojectError

QUIET = {"log": lambda _: None}


def _split_docs(data, cache) -> list[str]:
    """Decode a token cache back into its documents (each ends with <|endoftext|>)."""
    tokens = np.asarray(cache.tokens)
    ends = np.flatnonzero(tokens == data.eot_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [data.tokenizer.decode(tokens[s:e].tolist()) for s, e in zip(starts, ends)]


def test_tokenizer_round_trips_every_corpus_document(pydocs_full, pydocs_corpus):
    cfg = DataConfig(dataset="pydocs")
    texts = [text for _, text in resolve_corpus(cfg, pydocs_corpus.parents[1]).documents()]
    encodings = pydocs_full.tokenizer.encode_batch(texts, add_special_tokens=False)
    assert [pydocs_full.tokenizer.decode(e.ids) for e in encodings] == texts


def test_token_caches_hold_exactly_the_split_documents(pydocs_full, pydocs_corpus):
    cfg = DataConfig(dataset="pydocs")
    docs = list(resolve_corpus(cfg, pydocs_corpus.parents[1]).documents())
    assert _split_docs(pydocs_full, pydocs_full.train) == [t for s, t in docs if s == "train"]
    assert _split_docs(pydocs_full, pydocs_full.val) == [t for s, t in docs if s == "val"]


def test_default_tokenizer_is_byte_level_bpe_with_the_registry_vocab_and_specials(pydocs_full):
    assert pydocs_full.vocab_size == 8192
    assert pydocs_full.tokenizer.token_to_id(EOT) == pydocs_full.eot_id
    assert pydocs_full.tokenizer.token_to_id(PAD) == pydocs_full.pad_id != pydocs_full.eot_id
    text = "Ünïcödé, CamelCase and   spaces\n\ttabs 🙂"
    assert pydocs_full.tokenizer.decode(pydocs_full.tokenizer.encode(text).ids) == text


def test_info_is_flat_and_records_the_split_and_counts(pydocs_full):
    info = pydocs_full.info
    assert all(isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in info.items())
    assert info["dataset"] == "pydocs" and info["val_split"] == "heldout:0.05@seed1234"
    assert info["train_tokens"] == len(pydocs_full.train) and info["val_tokens"] == len(pydocs_full.val)
    assert info["train_docs"] > 10 * info["val_docs"] > 0
    assert info["tokenizer_hash"] == pydocs_full.train.header["tokenizer_hash"]


def test_second_call_reuses_tokenizer_and_caches_without_rebuilding(small_pydocs):
    cfg = small_pydocs()
    first = prepare_data(cfg, **QUIET)
    mtimes = [p.stat().st_mtime_ns for p in (first.tokenizer_path, first.train.path, first.val.path)]
    logs: list[str] = []
    t0 = time.perf_counter()
    second = prepare_data(cfg, log=logs.append)
    assert time.perf_counter() - t0 < 5
    assert [p.stat().st_mtime_ns for p in (second.tokenizer_path, second.train.path, second.val.path)] == mtimes
    assert second.info == first.info
    assert all("reusing" in line for line in logs)


def test_tokenizer_and_caches_are_keyed_by_corpus_settings_and_vocab(small_pydocs):
    base = prepare_data(small_pydocs(), **QUIET)
    other_cap = prepare_data(small_pydocs(max_train_docs=30), **QUIET)
    other_vocab = prepare_data(small_pydocs(vocab_size=400), **QUIET)
    other_split = prepare_data(small_pydocs(split_seed=7), **QUIET)
    paths = {d.tokenizer_path for d in (base, other_cap, other_vocab, other_split)}
    assert len(paths) == 4
    assert other_vocab.vocab_size == 400 and other_cap.info["train_docs"] == 30


def test_given_tokenizer_path_is_used_instead_of_training(small_pydocs):
    trained = prepare_data(small_pydocs(), **QUIET)
    reused = prepare_data(small_pydocs(max_train_docs=20, tokenizer_path=str(trained.tokenizer_path)), **QUIET)
    assert reused.info["tokenizer"] == "file" and reused.tokenizer_path == trained.tokenizer_path
    assert reused.info["tokenizer_hash"] == trained.info["tokenizer_hash"]
    with pytest.raises(ConfigError, match="vocab_size=600 contradicts"):
        prepare_data(small_pydocs(vocab_size=600, tokenizer_path=str(trained.tokenizer_path)), **QUIET)


def test_missing_tokenizer_path_is_a_one_line_error(small_pydocs, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        prepare_data(small_pydocs(tokenizer_path=str(tmp_path / "none.json")), **QUIET)


def test_too_small_vocab_is_rejected():
    with pytest.raises(ConfigError, match="vocab_size=100 is too small"):
        DataConfig(dataset="pydocs", vocab_size=100).validate()


def test_truncated_token_cache_is_detected_and_rebuilt(small_pydocs):
    first = prepare_data(small_pydocs(), **QUIET)
    expected = np.asarray(first.train.tokens).copy()
    with open(first.train.path, "r+b") as f:
        f.truncate(10)
    with pytest.raises(MlprojectError, match="header says"):
        open_token_cache(first.train.path)
    again = prepare_data(small_pydocs(), **QUIET)
    assert np.array_equal(np.asarray(again.train.tokens), expected)


def test_empty_validation_split_is_an_error_not_an_empty_cache(small_pydocs):
    with pytest.raises(MlprojectError, match="the val split has no documents"):
        prepare_data(small_pydocs(max_train_docs=3, val_fraction=0.001), **QUIET)


def test_concurrent_calls_build_once_and_agree(small_pydocs, seeded_cache):
    cfg = small_pydocs(max_train_docs=60)
    script = (
        "import json, sys\n"
        "from mlproject.data.config import DataConfig\n"
        "from mlproject.data.prepare import prepare_data\n"
        "logs = []\n"
        f"d = prepare_data(DataConfig(**{cfg.__dict__!r}), log=logs.append)\n"
        "print(json.dumps({'hash': d.info['tokenizer_hash'], 'tokens': len(d.train),"
        " 'trained': any('training' in line for line in logs)}))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert results[0]["hash"] == results[1]["hash"] and results[0]["tokens"] == results[1]["tokens"]
    assert sorted(r["trained"] for r in results) == [False, True]
    assert not list(seeded_cache.rglob("*.tmp"))


# ----------------------------------------------------------------------------- cache format

@pytest.mark.parametrize(("vocab_size", "dtype"), [(50257, "uint16"), (65535, "uint16"), (65536, "uint32")])
def test_token_dtype_is_uint16_while_the_vocab_fits_else_uint32(tmp_path, vocab_size, dtype):
    writer = TokenCacheWriter(tmp_path / "train.bin", vocab_size=vocab_size, eot_id=0, meta={"dataset": "x"})
    writer.write([[vocab_size - 1, 5], [7]], text_bytes=3)
    cache = writer.close()
    assert cache.tokens.dtype == np.dtype(dtype) and cache.header["dtype"] == dtype
    assert cache.tokens.tolist() == [vocab_size - 1, 5, 0, 7, 0]
    assert (len(cache), cache.num_docs, cache.header["text_bytes"]) == (5, 2, 3)


def test_writer_appends_chunks_and_leaves_nothing_when_aborted(tmp_path):
    writer = TokenCacheWriter(tmp_path / "train.bin", vocab_size=1000, eot_id=1, meta={})
    for chunk in ([[2, 3]], [[4], [5, 6]]):
        writer.write(chunk)
    assert writer.close().tokens.tolist() == [2, 3, 1, 4, 1, 5, 6, 1]
    aborted = TokenCacheWriter(tmp_path / "val.bin", vocab_size=1000, eot_id=1, meta={})
    aborted.write([[2]])
    aborted.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.bin", "train.json"]


def test_header_records_dataset_tokenizer_and_counts(small_pydocs):
    data = prepare_data(small_pydocs(), **QUIET)
    header = json.loads(data.train.path.with_suffix(".json").read_text())
    assert header["dataset"] == "pydocs" and header["split"] == "train"
    assert header["tokenizer_hash"] == data.info["tokenizer_hash"]
    assert (header["num_tokens"], header["num_docs"], header["dtype"]) == (len(data.train), 40, "uint16")


def test_saved_tokenizer_loads_back_identically(small_pydocs):
    data = prepare_data(small_pydocs(), **QUIET)
    text = "Return the number of items in a container."
    assert load_tokenizer(data.tokenizer_path).encode(text).ids == data.tokenizer.encode(text).ids


# ----------------------------------------------------------------------------- content hashes

def test_cache_overwritten_with_zeros_at_the_same_size_is_refused_and_rebuilt(small_pydocs):
    first = prepare_data(small_pydocs(), **QUIET)
    expected = np.asarray(first.train.tokens).copy()
    size = first.train.path.stat().st_size
    first.train.path.write_bytes(bytes(size))
    with pytest.raises(CorruptTokenCache, match="content hash"):
        open_token_cache(first.train.path)
    logs: list[str] = []
    again = prepare_data(small_pydocs(), log=logs.append)
    assert any("rebuilding the token caches" in line and "content hash" in line for line in logs)
    assert np.array_equal(np.asarray(again.train.tokens), expected)
    assert again.info["digest"] == first.info["digest"]


def test_cache_with_out_of_range_ids_is_refused_and_rebuilt(small_pydocs):
    first = prepare_data(small_pydocs(), **QUIET)
    expected = np.asarray(first.val.tokens).copy()
    tokens = np.memmap(first.val.path, dtype=np.uint16, mode="r+")
    tokens[:5] = 65000  # far past the 512-token vocabulary
    tokens.flush()
    del tokens
    again = prepare_data(small_pydocs(), **QUIET)
    assert np.array_equal(np.asarray(again.val.tokens), expected)
    assert int(np.asarray(again.val.tokens).max()) < again.vocab_size


def test_header_records_the_content_hash_of_the_file(small_pydocs):
    data = prepare_data(small_pydocs(), **QUIET)
    for cache in (data.train, data.val):
        assert cache.header["content_hash"] == content_hash(cache.path)
        assert cache.header["content_hash"].startswith("xxh3_128:")
        assert cache.header["format_version"] == FORMAT_VERSION == 2


def test_dataset_digest_comes_from_content_not_counts(small_pydocs, seeded_cache):
    first = prepare_data(small_pydocs(), **QUIET)
    # The digest logged with mlflow.log_input is a hash of the tokenizer and both files' bytes.
    assert first.info["digest"] == hashlib.sha256(
        f"{first.info['tokenizer_hash']}:{first.train.header['content_hash']}:"
        f"{first.val.header['content_hash']}".encode()).hexdigest()[:12]
    other = prepare_data(small_pydocs(split_seed=7), **QUIET)
    assert other.info["digest"] != first.info["digest"]


def test_version_1_header_without_a_content_hash_is_not_read(tmp_path):
    writer = TokenCacheWriter(tmp_path / "train.bin", vocab_size=1000, eot_id=1, meta={})
    writer.write([[2, 3]])
    writer.close()
    header_path = tmp_path / "train.json"
    header = json.loads(header_path.read_text())
    del header["content_hash"]
    header["format_version"] = 1
    header_path.write_text(json.dumps(header))
    with pytest.raises(CorruptTokenCache, match="content_hash"):
        open_token_cache(tmp_path / "train.bin")


def test_writer_refuses_ids_outside_the_vocabulary(tmp_path):
    writer = TokenCacheWriter(tmp_path / "train.bin", vocab_size=1000, eot_id=1, meta={})
    with pytest.raises(MlprojectError, match="token id 1000 is out of range for vocab_size=1000"):
        writer.write([[2, 1000]])
    writer.abort()


# ----------------------------------------------------------------------------- tokenizer sample bound

def test_tokenizer_trains_on_a_bounded_sample_recorded_in_its_cache_key(small_pydocs):
    logs: list[str] = []
    sampled = prepare_data(small_pydocs(max_train_docs=300, tokenizer_sample_mb=0.05), log=logs.append)
    trained = next(line for line in logs if "tokenizer trained on" in line)
    assert "the first 0.05 MB of the split" in trained
    docs = int(trained.split("tokenizer trained on ")[1].split()[0])
    assert 0 < docs < sampled.info["train_docs"]  # caches still hold the whole split
    assert sampled.tokenizer_path.name.endswith("-s0.05mb.json")
    full = prepare_data(small_pydocs(max_train_docs=300, tokenizer_sample_mb=1000), **QUIET)
    assert full.tokenizer_path != sampled.tokenizer_path
    assert full.info["tokenizer_hash"] != sampled.info["tokenizer_hash"]


def test_non_positive_tokenizer_sample_is_rejected():
    with pytest.raises(ConfigError, match="tokenizer_sample_mb=0"):
        DataConfig(dataset="pydocs", tokenizer_sample_mb=0).validate()


# ----------------------------------------------------------------------------- fast encoding

def test_tiktoken_encoder_gives_exactly_the_tokenizer_ids_on_the_whole_corpus(pydocs_full, pydocs_corpus):
    cfg = DataConfig(dataset="pydocs")
    texts = [text for _, text in resolve_corpus(cfg, pydocs_corpus.parents[1]).documents()]
    encode = fast_encoder(pydocs_full.tokenizer, np.dtype(np.uint16), texts[:20])
    assert encode is not None
    expected = hf_encoder(pydocs_full.tokenizer, np.dtype(np.uint16))(texts)
    got = encode(texts)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected)) and len(got) == len(expected)
    special = f"before {EOT} after"  # tokenizers turns the literal into the special id; so must we
    assert encode([special])[0].tolist() == pydocs_full.tokenizer.encode(special).ids


def test_caches_are_encoded_with_tiktoken_and_say_so(small_pydocs):
    logs: list[str] = []
    prepare_data(small_pydocs(), log=logs.append)
    assert any("on tiktoken" in line and "memory bounded by" in line for line in logs)


def test_a_tokenizer_tiktoken_cannot_run_falls_back_to_tokenizers(small_pydocs, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    wordlevel = Tokenizer(models.WordLevel({"a": 0, EOT: 1, "[UNK]": 2}, unk_token="[UNK]"))
    wordlevel.pre_tokenizer = pre_tokenizers.Whitespace()
    assert fast_encoder(wordlevel, np.dtype(np.uint16), ["a a"]) is None
