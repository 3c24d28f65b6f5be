"""The offline corpus: built from the standard library's sources without network or imports."""

from __future__ import annotations

import hashlib
import json
import socket

import pytest

from mlproject.data.pydocs import build_pydocs, iter_pydocs, read_pydocs


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corpus_builds_without_network_and_is_identical_across_builds(pydocs_corpus, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the offline corpus must not open sockets")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    rebuilt = build_pydocs(tmp_path / "again")
    assert _sha(rebuilt) == _sha(pydocs_corpus)


def test_corpus_is_a_few_megabytes_of_english_prose(pydocs_corpus):
    texts = list(read_pydocs(pydocs_corpus))
    size = sum(len(t.encode()) for t in texts)
    assert 1.5e6 < size < 6e6
    assert len(texts) > 300
    words = " ".join(texts[:50]).split()
    assert sum(w.lower() in {"the", "a", "of", "is", "to"} for w in words) / len(words) > 0.05


def test_corpus_has_one_document_per_module_and_skips_test_packages(pydocs_corpus):
    ids = [json.loads(line)["id"] for line in pydocs_corpus.read_text(encoding="utf-8").splitlines()]
    modules = [i for i in ids if not i.startswith("topic:")]
    assert len(modules) == len(set(modules))
    assert "json.decoder" in modules and "collections" in modules
    assert not [m for m in modules if m.split(".")[0] == "test" or ".test." in m or ".tests." in m]
    assert any(i.startswith("topic:") for i in ids)


def test_docstrings_are_read_from_source_without_importing(tmp_path):
    stdlib = tmp_path / "lib"
    (stdlib / "pkg" / "tests").mkdir(parents=True)
    marker = tmp_path / "imported"
    (stdlib / "pkg" / "__init__.py").write_text(
        f'"""Package prose."""\nopen({str(marker)!r}, "w").close()\n'
        'class Thing:\n    """Thing prose."""\n    def go(self):\n        """Go prose."""\n'
        'if True:\n    def nested():\n        """Nested prose."""\n')
    (stdlib / "pkg" / "tests" / "test_pkg.py").write_text('"""Test prose."""\n')
    (stdlib / "broken.py").write_text('"""Broken prose."""\nprint "python 2"\n')
    docs = list(iter_pydocs(stdlib))
    assert docs == [{"id": "pkg", "text": "Package prose.\n\nThing prose.\n\nGo prose.\n\nNested prose."}]
    assert not marker.exists()


def test_existing_corpus_file_is_reused(pydocs_corpus):
    mtime = pydocs_corpus.stat().st_mtime_ns
    assert build_pydocs(pydocs_corpus.parents[1]) == pydocs_corpus
    assert pydocs_corpus.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("doc_id", ["json", "topic:for"])
def test_corpus_contains_module_and_reference_topic_documents(pydocs_corpus, doc_id):
    docs = {d["id"]: d["text"] for d in map(json.loads, pydocs_corpus.read_text(encoding="utf-8").splitlines())}
    assert len(docs[doc_id]) > 200
