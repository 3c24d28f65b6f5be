"""generate's architecture flags of the original suite: each is checked against the checkpoint
(a mismatch is one line naming both values); the dropout flags change nothing."""

from __future__ import annotations

import pytest
import torch

from mlproject.cli import main
from mlproject.data.tokenizer import save_tokenizer, train_tokenizer
from mlproject.model.checkpoint import save_model_checkpoint
from mlproject.model.config import GPTConfig
from mlproject.model.gpt import GPT

MODEL = dict(model_version="gpt3", preset=None, n_layer=1, n_head=2, d_model=32, block_size=16, vocab_size=320,
             norm_type="rmsnorm", norm_eps=1e-6, mlp_type="swiglu", mlp_expansion=4.0, pos_encoding="rope",
             rope_theta=500.0, attention_impl="manual", attention_window=4)
# Every architecture flag of the original generate.py, with the value this checkpoint has.
MATCHING = ["--model-version", "gpt3", "--block-size", "16", "--n-layer", "1", "--n-head", "2", "--d-model", "32",
            "--layernorm-eps", "1e-6", "--mlp-expansion", "4", "--norm-type", "rmsnorm", "--mlp-type", "swiglu",
            "--pos-encoding", "rope", "--attention-impl", "manual", "--rope-base", "500"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("generate-original")
    texts = ["def add(a, b):\n    return a + b\n", "The quick brown fox jumps over the lazy dog."] * 40
    tokenizer = save_tokenizer(train_tokenizer(texts, 300), tmp / "tokenizer.json")
    torch.manual_seed(0)
    checkpoint = save_model_checkpoint(tmp / "model.pt", GPT(GPTConfig(**MODEL)))
    return ["--checkpoint", str(checkpoint), "--tokenizer-path", str(tokenizer), "--max-new-tokens", "6",
            "--prompt", "def ", "--strategy", "greedy"]


def test_matching_architecture_flags_generate(files, capsys):
    assert main(["generate", *files, *MATCHING]) == 0
    assert "def " in capsys.readouterr().out


@pytest.mark.parametrize("flag,value,field,actual", [
    ("--model-version", "gpt2", "model_version", "gpt3"), ("--block-size", "256", "block_size", "16"),
    ("--n-layer", "4", "n_layer", "1"), ("--n-head", "4", "n_head", "2"), ("--d-model", "256", "d_model", "32"),
    ("--layernorm-eps", "1e-5", "norm_eps", "1e-06"), ("--mlp-expansion", "2", "mlp_expansion", "4.0"),
    ("--norm-type", "layernorm", "norm_type", "rmsnorm"), ("--mlp-type", "gelu", "mlp_type", "swiglu"),
    ("--pos-encoding", "learned", "pos_encoding", "rope"), ("--attention-impl", "sdpa", "attention_impl", "manual"),
    ("--rope-base", "10000", "rope_theta", "500.0"), ("--pos-encoding", "none", "pos_encoding", "rope"),
])
def test_an_architecture_flag_that_contradicts_the_checkpoint_names_both_values(files, capsys, flag, value, field,
                                                                                 actual):
    assert main(["generate", *files, flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{field}=" in err and f"checkpoint's {field}={actual}" in err


def test_dropout_flags_change_nothing_when_generating(files, capsys):
    assert main(["generate", *files]) == 0
    plain = capsys.readouterr().out
    assert main(["generate", *files, "--dropout", "0.5", "--resid-dropout", "0.5"]) == 0
    assert capsys.readouterr().out == plain
