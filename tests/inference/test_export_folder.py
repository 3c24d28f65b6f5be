"""`export-hf` never deletes what the suite did not write: a folder holding anything else is
refused with one line and left as it was; an earlier export (by its marker) is replaced whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mlproject.cli import main
from mlproject.data.tokenizer import save_tokenizer, train_tokenizer
from mlproject.model.checkpoint import save_model_checkpoint
from mlproject.model.config import GPTConfig
from mlproject.model.gpt import GPT
from mlproject.outdir import MARKER

TEXTS = ["def add(a, b):\n    return a + b\n", "The quick brown fox jumps over the lazy dog."] * 40


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, tokenizer.json) of a tiny random GPT-2."""
    tmp = tmp_path_factory.mktemp("src")
    tokenizer = save_tokenizer(train_tokenizer(TEXTS, 300), tmp / "tokenizer.json")
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(preset=None, n_layer=1, n_head=2, d_model=32, block_size=16, vocab_size=320))
    return save_model_checkpoint(tmp / "model.pt", gpt), tokenizer


def _export(source: tuple[Path, Path], output: Path) -> int:
    checkpoint, tokenizer = source
    return main(["export-hf", "--checkpoint", str(checkpoint), "--tokenizer-path", str(tokenizer),
                 "--output", str(output), "--log-to-run", "false"])


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (p.read_bytes().hex() if p.is_file() else "/") for p in sorted(folder.rglob("*"))}


def _user_folder(root: Path, with_config_json: bool) -> Path:
    folder = root / "out"
    (folder / "subdir").mkdir(parents=True)
    (folder / "important.txt").write_text("my notes")
    (folder / "subdir" / "data.csv").write_text("a,b\n1,2\n")
    if with_config_json:
        (folder / "config.json").write_text('{"mine": true}')
    return folder


@pytest.mark.parametrize("with_config_json", [False, True])
def test_a_folder_with_user_files_is_refused_and_left_as_it_was(tmp_path, source, capsys, with_config_json):
    folder = _user_folder(tmp_path, with_config_json)
    before = _snapshot(folder)
    assert _export(source, folder) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not an earlier export-hf output" in err and "important.txt" in err
    assert _snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no temporary folder left beside it"


def test_an_export_goes_to_a_new_or_empty_folder_with_a_marker(tmp_path, source):
    (tmp_path / "empty").mkdir()
    for output in (tmp_path / "new" / "hf", tmp_path / "empty"):
        assert _export(source, output) == 0
        marker = json.loads((output / MARKER).read_text())
        assert marker["kind"] == "export-hf" and "config.json" in marker["entries"]
        assert set(marker["entries"]) | {MARKER} == {p.name for p in output.iterdir()}


def test_an_earlier_export_is_replaced_whole(tmp_path, source):
    output = tmp_path / "hf"
    assert _export(source, output) == 0
    (output / "stale.bin").write_bytes(b"x")  # as if an older export wrote a file the new one does not
    marker = json.loads((output / MARKER).read_text())
    (output / MARKER).write_text(json.dumps({**marker, "entries": [*marker["entries"], "stale.bin"]}))
    assert _export(source, output) == 0
    assert not (output / "stale.bin").exists()
    assert (output / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"], "the earlier export moved aside is gone"


def test_an_earlier_export_the_user_added_files_to_is_refused(tmp_path, source, capsys):
    output = tmp_path / "hf"
    assert _export(source, output) == 0
    (output / "README.md").write_text("my model card")
    before = _snapshot(output)
    assert _export(source, output) == 2
    err = capsys.readouterr().err
    assert "README.md" in err and "did not write" in err
    assert _snapshot(output) == before


def test_a_file_in_the_way_is_refused(tmp_path, source, capsys):
    (tmp_path / "hf").write_text("a file")
    assert _export(source, tmp_path / "hf") == 2
    assert "is not a folder" in capsys.readouterr().err
    assert (tmp_path / "hf").read_text() == "a file"
