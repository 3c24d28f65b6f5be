"""`mlproject import-hf`: a local save_pretrained folder becomes a checkpoint our GPT loads."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from mlproject.cli import main
from mlproject.model.checkpoint import load_model_checkpoint


def test_import_hf_writes_a_checkpoint_with_the_same_logits(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    hf_model = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_positions=32, n_layer=2, n_head=2, n_embd=32,
                                          bos_token_id=0, eos_token_id=0)).eval()
    hf_model.save_pretrained(tmp_path / "gpt2-tiny")
    output = tmp_path / "imported.pt"

    assert main(["import-hf", "--model-dir", str(tmp_path / "gpt2-tiny"), "--output", str(output)]) == 0

    assert f"wrote {output}" in capsys.readouterr().out
    model, _ = load_model_checkpoint(output)
    idx = torch.randint(0, 96, (2, 20))
    with torch.no_grad():
        assert (model(idx)[0] - hf_model(idx).logits).abs().max().item() < 1e-4


def test_import_hf_of_a_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["import-hf", "--model-dir", str(tmp_path / "absent"), "--output", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlproject: error:") and "no config.json" in err and err.count("\n") == 1
    assert not (tmp_path / "x.pt").exists()
