"""Document sources: Hub loaders (on local stand-ins), the offline guard, local_jsonl, splits and caps."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from mlproject.cli import main
from mlproject.data.config import DataConfig
from mlproject.data.prepare import prepare_data
from mlproject.data.registry import REGISTRY, DatasetSpec
from mlproject.data.sources import held_out, resolve_corpus
from mlproject.errors import ConfigError, MlprojectError

HUB_KEYS = [key for key, spec in REGISTRY.items() if spec.needs_network]
# The file format each Hub corpus is published in (parquet, or JSON lines for c4/pile/redpajama).
HUB_FORMAT = {"small": "parquet", "large": "parquet", "wikitext2": "parquet", "tinystories": "parquet",
              "openwebtext": "parquet", "c4_en": "json", "pile": "json", "redpajama": "json"}
QUIET = {"log": lambda _: None}


def _docs(split: str, n: int) -> list[str]:
    return [f"Document {i} of the {split} split. It talks about topic {i % 7} at some length.\n"
            f"A second line follows for document {i}." for i in range(n)]


def _rows(spec: DatasetSpec, docs: list[str]) -> list[str]:
    """WikiText-style rows are lines of articles under " = Title = " headings; others are documents."""
    if not spec.join_lines:
        return docs
    rows = []
    for i, doc in enumerate(docs):
        rows += ["", f" = Article {i} = \n", "", " = = Part = = \n", *(line + "\n" for line in doc.split("\n"))]
    return rows


def _article(i: int, doc: str) -> str:
    return f" = Article {i} = \n = = Part = = \n{doc}"


def _write(path: Path, fmt: str, field: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pd.DataFrame({field: rows, "meta": ["x"] * len(rows)}).to_parquet(path)
    else:
        path.write_text("".join(json.dumps({field: r, "meta": "x"}) + "\n" for r in rows))


def stand_in(spec: DatasetSpec, folder: Path, docs: dict[str, list[str]]) -> DatasetSpec:
    """`spec` pointed at local files in its own format and split layout, loaded the same way."""
    fmt = HUB_FORMAT[spec.key]
    ext = "parquet" if fmt == "parquet" else "jsonl"
    files = {}
    for split, split_docs in docs.items():
        stem = "val" if (spec.key == "pile" and split == "validation") else split  # the Pile names it val.jsonl.zst
        path = folder / f"{stem}-00000-of-00001.{ext}"
        _write(path, fmt, spec.text_field, _rows(spec, split_docs))
        files[split] = str(path)
    if spec.data_files:  # builder-style spec ("parquet"/"json" + data files): swap the file patterns
        return dataclasses.replace(spec, data_files=files, needs_network=False)
    return dataclasses.replace(spec, hub_path=str(folder), hub_name=None, needs_network=False)


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    """`datasets` writes its Arrow caches and lock files under this test's directory."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")


@pytest.mark.parametrize("key", HUB_KEYS)
def test_hub_loader_reads_its_corpus_format_and_splits(key, tmp_path, monkeypatch, isolated_env):
    spec = REGISTRY[key]
    docs = {"train": _docs("train", 60)}
    if spec.val_split:
        docs[spec.val_split] = _docs("validation", 8)
    monkeypatch.setitem(REGISTRY, key, stand_in(spec, tmp_path / "hub" / key, docs))
    data = prepare_data(DataConfig(dataset=key, vocab_size=300), **QUIET)
    decoded = data.tokenizer.decode(data.train.tokens.tolist(), skip_special_tokens=False)
    train_docs = decoded.split("<|endoftext|>")[:-1]  # every document ends with <|endoftext|>
    expected = [_article(i, d) if spec.join_lines else d for i, d in enumerate(docs["train"])]
    if spec.val_split:
        assert data.info["val_split"] == "named:validation"
        assert (data.info["train_docs"], data.info["val_docs"]) == (60, 8)
        assert train_docs == expected
    else:
        assert data.info["val_split"] == "heldout:0.05@seed1234"
        assert data.info["train_docs"] + data.info["val_docs"] == 60 and data.info["val_docs"] > 0
        assert train_docs == [d for d in expected if d in train_docs] and len(train_docs) == data.info["train_docs"]


def test_wikitext_rows_are_joined_into_one_document_per_article(tmp_path, monkeypatch):
    spec = REGISTRY["wikitext2"]
    docs = {"train": _docs("train", 5), "validation": _docs("validation", 2)}
    monkeypatch.setitem(REGISTRY, "wikitext2", stand_in(spec, tmp_path / "hub", docs))
    texts = [text for split, text in resolve_corpus(DataConfig(dataset="wikitext2")).documents() if split == "train"]
    assert len(texts) == 5
    assert texts[1] == _article(1, docs["train"][1])


@pytest.mark.parametrize("key", ["wikitext2", "pile"])
def test_capped_hub_loads_stream_and_stop_at_the_cap(key, tmp_path, monkeypatch):
    import datasets

    calls = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: calls.append(kw["streaming"]) or real(*a, **kw))
    docs = {"train": _docs("train", 50), "validation": _docs("validation", 10)}
    monkeypatch.setitem(REGISTRY, key, stand_in(REGISTRY[key], tmp_path / "hub", docs))
    corpus = resolve_corpus(DataConfig(dataset=key, max_train_docs=7, max_val_docs=3))
    splits = [split for split, _ in corpus.documents()]
    assert (splits.count("train"), splits.count("val")) == (7, 3)
    assert calls == [True, True]


def test_hub_key_fails_fast_in_one_line_when_the_hub_is_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(MlprojectError) as err:
        prepare_data(DataConfig(dataset="wikitext2"), **QUIET)
    assert time.perf_counter() - t0 < 5
    message = str(err.value)
    assert "\n" not in message
    assert "'wikitext2'" in message and "HF_HUB_OFFLINE" in message
    assert "pydocs" in message and "local_jsonl" in message


def test_cli_reports_an_offline_hub_key_in_one_line_without_traceback(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["dataloaders", "--dataset", "c4_en", "--max-train-docs", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mlproject: error: dataset 'c4_en'")
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- held-out split

def test_held_out_split_is_deterministic_and_close_to_the_fraction():
    picks = [held_out(i, 1234, 0.1) for i in range(5000)]
    assert picks == [held_out(i, 1234, 0.1) for i in range(5000)]
    assert 0.08 < sum(picks) / len(picks) < 0.12
    assert picks != [held_out(i, 99, 0.1) for i in range(5000)]


def test_held_out_split_caps_train_and_val_independently(small_pydocs):
    corpus = resolve_corpus(small_pydocs(max_train_docs=30, max_val_docs=4))
    splits = [split for split, _ in corpus.documents()]
    assert (splits.count("train"), splits.count("val")) == (30, 4)


def test_uncapped_held_out_val_stops_with_the_train_cap(small_pydocs):
    corpus = resolve_corpus(small_pydocs(max_train_docs=100, val_fraction=0.2))
    pairs = list(corpus.documents())
    assert [s for s, _ in pairs].count("train") == 100
    assert pairs[-1][0] == "train"  # nothing is read past the last training document
    assert 5 < [s for s, _ in pairs].count("val") < 50


def test_train_only_pass_yields_the_same_train_documents(small_pydocs):
    corpus = resolve_corpus(small_pydocs())
    both = [text for split, text in corpus.documents() if split == "train"]
    assert [text for _, text in corpus.documents(("train",))] == both


# ----------------------------------------------------------------------------- local_jsonl

def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _texts(cfg: DataConfig) -> list[str]:
    return [text for _, text in resolve_corpus(cfg).documents()]


def test_local_jsonl_reads_settings_from_environment_variables(tmp_path, monkeypatch):
    path = _jsonl(tmp_path / "a.jsonl", [{"body": "first doc"}, {"body": "second doc"}])
    monkeypatch.setenv("LOCAL_TEXT_DATA_PATH", str(path))
    monkeypatch.setenv("LOCAL_TEXT_DATA_FORMAT", "json")
    monkeypatch.setenv("LOCAL_TEXT_FIELD", "body")
    assert sorted(_texts(DataConfig(dataset="local_jsonl"))) == ["first doc", "second doc"]


def test_local_jsonl_flags_win_over_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_TEXT_DATA_PATH", str(tmp_path / "missing.jsonl"))
    monkeypatch.setenv("LOCAL_TEXT_FIELD", "body")
    path = _jsonl(tmp_path / "a.jsonl", [{"content": "from the flag"}])
    cfg = DataConfig(dataset="local_jsonl", local_path=str(path), local_field="content")
    assert _texts(cfg) == ["from the flag"]


def test_local_text_format_makes_one_document_per_blank_line_separated_block(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("Para one line one.\nPara one line two.\n\n\nPara two.\n  \nPara three.\n")
    cfg = DataConfig(dataset="local_jsonl", local_path=str(path), local_format="text")
    assert _texts(cfg) == ["Para one line one.\nPara one line two.", "Para two.", "Para three."]


def test_local_jsonl_reads_globs_and_comma_separated_files_in_order(tmp_path):
    for name in ("b", "a"):
        _jsonl(tmp_path / f"{name}.jsonl", [{"text": f"{name}{i}"} for i in range(2)])
    extra = _jsonl(tmp_path / "extra.json", [{"text": "extra"}])
    cfg = DataConfig(dataset="local_jsonl", local_path=f"{tmp_path}/*.jsonl, {extra}", val_fraction=0.01)
    corpus = resolve_corpus(cfg)
    assert [p.name for p in corpus.local.paths] == ["a.jsonl", "b.jsonl", "extra.json"]
    assert sorted(_texts(cfg)) == ["a0", "a1", "b0", "b1", "extra"]


def test_local_jsonl_missing_field_is_a_one_line_error_naming_file_line_and_field(tmp_path):
    path = _jsonl(tmp_path / "a.jsonl", [{"text": "ok"}, {"body": "no text field"}])
    with pytest.raises(ConfigError, match=r"a\.jsonl:2: no field 'text' \(found: body\)") as err:
        _texts(DataConfig(dataset="local_jsonl", local_path=str(path)))
    assert "\n" not in str(err.value)


def test_local_jsonl_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match=r"matches no file") as err:
        resolve_corpus(DataConfig(dataset="local_jsonl", local_path=str(tmp_path / "nope*.jsonl")))
    assert "nope" in str(err.value) and "\n" not in str(err.value)


def test_local_jsonl_without_a_path_says_how_to_give_one():
    with pytest.raises(ConfigError, match=r"--local-path.*LOCAL_TEXT_DATA_PATH"):
        resolve_corpus(DataConfig(dataset="local_jsonl"))


def test_local_jsonl_invalid_json_line_is_a_one_line_error(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(ConfigError, match=r"a\.jsonl:2: invalid JSON"):
        _texts(DataConfig(dataset="local_jsonl", local_path=str(path)))


def test_editing_a_local_file_changes_the_corpus_key(tmp_path):
    path = _jsonl(tmp_path / "a.jsonl", [{"text": "one"}])
    cfg = DataConfig(dataset="local_jsonl", local_path=str(path))
    before = resolve_corpus(cfg).key
    _jsonl(path, [{"text": "one"}, {"text": "two"}])
    assert resolve_corpus(cfg).key != before


def test_local_jsonl_prepares_through_the_cli_flags(tmp_path, capsys):
    path = _jsonl(tmp_path / "stories.jsonl", [{"story": f"Story number {i} is about a cat and a dog."}
                                               for i in range(80)])
    code = main(["dataloaders", "--dataset", "local_jsonl", "--local-path", str(path), "--local-field", "story",
                 "--vocab-size", "300", "--block-size", "16", "--batch-size", "2", "--preview-batches", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "dataset local_jsonl (local)" in out and "Story number" in out
