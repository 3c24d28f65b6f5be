"""Checkpoint files: atomic writes, weights-only loading, one-line errors for bad files."""

from __future__ import annotations

import torch
import pytest

from mlproject.errors import MlprojectError
from mlproject.model.checkpoint import (clean_state_dict, load_checkpoint, load_model_checkpoint, save_checkpoint,
                                        save_model_checkpoint, unwrap_model)
from mlproject.model.config import GPTConfig
from mlproject.model.gpt import GPT

TINY = GPTConfig(n_layer=2, n_head=2, d_model=64, block_size=32, vocab_size=128)


def test_checkpoint_roundtrip_keeps_values_and_adds_format_marker(tmp_path):
    state = {"step": 7, "weights": torch.arange(4.0), "nested": {"t": (1, 2.5, None)}}
    path = save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(path)
    assert loaded["format"] == "mlproject-checkpoint" and loaded["version"] == 1
    assert loaded["step"] == 7 and torch.equal(loaded["weights"], torch.arange(4.0))
    assert loaded["nested"] == {"t": (1, 2.5, None)}


def test_save_leaves_no_temporary_files(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"step": 1})
    save_checkpoint(tmp_path / "c.pt", {"step": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 2


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"step": 1})
    with pytest.raises(Exception):
        save_checkpoint(tmp_path / "c.pt", {"step": 2, "bad": lambda: None})  # not picklable
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_truncated_checkpoint_is_a_one_line_error_naming_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.randn(256, 256)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MlprojectError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_empty_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(MlprojectError, match="empty"):
        load_checkpoint(path)


def test_foreign_torch_file_is_rejected_for_missing_format_marker(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, path)
    with pytest.raises(MlprojectError, match="not an mlproject checkpoint") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_non_torch_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello, I am not a checkpoint\n")
    with pytest.raises(MlprojectError) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_checkpoint_is_an_error(tmp_path):
    with pytest.raises(MlprojectError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_wrapper_prefixes_are_stripped_from_state_dict_keys():
    cleaned = clean_state_dict({"module._orig_mod.lm_head.weight": 1, "_orig_mod.wte": 2, "h.0": 3})
    assert cleaned == {"lm_head.weight": 1, "wte": 2, "h.0": 3}


def test_unwrap_model_finds_the_model_inside_compile_wrappers():
    model = GPT(TINY)
    wrapper = torch.nn.Module()
    wrapper._orig_mod = model
    assert unwrap_model(wrapper) is model


def test_model_checkpoint_rebuilds_an_identical_model(tmp_path):
    torch.manual_seed(0)
    model = GPT(TINY)
    save_model_checkpoint(tmp_path / "m.pt", model)
    rebuilt, state = load_model_checkpoint(tmp_path / "m.pt")
    assert state["model_config"]["n_layer"] == 2
    idx = torch.randint(0, 128, (2, 16))
    assert torch.equal(model.eval()(idx)[0], rebuilt(idx)[0])
    assert not rebuilt.training


def test_model_checkpoint_with_mismatched_weights_is_an_error(tmp_path):
    model = GPT(TINY)
    state = {"model_config": {**vars(model.config), "d_model": 32}, "model": model.state_dict()}
    save_checkpoint(tmp_path / "m.pt", state)
    with pytest.raises(MlprojectError, match="do not match"):
        load_model_checkpoint(tmp_path / "m.pt")
