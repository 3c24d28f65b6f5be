"""Export to Hugging Face: every exported class reloads with transformers and computes our logits
(to 1e-4) and our greedy continuations; architectures no HF class holds are one-line errors
listing every reason, or, with allow_custom_code, the suite's own code (tests/model/test_hf_custom.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from mlproject.data.tokenizer import EOT, PAD, save_tokenizer, train_tokenizer
from mlproject.errors import MlprojectError
from mlproject.inference.generate import generate
from mlproject.model.config import GPTConfig
from mlproject.model.gpt import GPT
from mlproject.model.hf_export import export_hf, hf_class_for

TEXTS = ["def add(a, b):\n    return a + b\n", "The quick brown fox jumps over the lazy dog.",
         "import os\nprint(os.getcwd())\n", "class Point:\n    x: int\n    y: int\n"] * 30
LLAMA_LIKE = dict(norm_type="rmsnorm", mlp_type="swiglu", pos_encoding="rope", bias=False)


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory) -> Path:
    return save_tokenizer(train_tokenizer(TEXTS, 320), tmp_path_factory.mktemp("tok") / "tokenizer.json")


def model(**fields) -> GPT:
    """A small random model whose weights (biases and norms too) are far from their init."""
    torch.manual_seed(0)
    cfg = dict(preset=None, n_layer=2, n_head=2, d_model=32, block_size=48, vocab_size=384, attention_window=8)
    gpt = GPT(GPTConfig(**{**cfg, **fields})).eval()
    with torch.no_grad():
        for p in gpt.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return gpt


@pytest.mark.parametrize("fields, cls", [
    (dict(model_version="gpt2"), "GPT2LMHeadModel"),
    (dict(model_version="gpt2", bias=False, tie_embeddings=False, gelu_approximate="none", n_layer=3),
     "GPT2LMHeadModel"),
    (dict(model_version="gpt3", attention_pattern="dense"), "GPT2LMHeadModel"),  # no banded layer: GPT-2
    (dict(model_version="gpt3", bias=False), "GPTNeoForCausalLM"),
    (dict(model_version="gpt3", bias=False, n_layer=3, tie_embeddings=False), "GPTNeoForCausalLM"),
    (dict(LLAMA_LIKE), "LlamaForCausalLM"),
    (dict(LLAMA_LIKE, tie_embeddings=False, rope_theta=500.0, n_head=4), "LlamaForCausalLM"),
])
def test_export_reloads_with_transformers_and_matches_logits_and_greedy_tokens(tmp_path, tokenizer_path, fields,
                                                                                cls):
    ours = model(**fields)
    assert export_hf(ours, tokenizer_path, tmp_path / "hf") == cls
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "hf" / "config.json").is_file()
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    assert type(hf).__name__ == cls and isinstance(tok, PreTrainedTokenizerFast)

    idx = torch.randint(0, ours.config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ours(idx)[0]
        assert expected.std() > 0.1
        assert (hf(idx).logits - expected).abs().max().item() < 1e-4

    prompt = tok("def add(a, b):")["input_ids"]
    mine = generate(ours, [prompt], 20, temperature=0.0)[0]
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None,
                             pad_token_id=tok.pad_token_id)[0, len(prompt):].tolist()
    assert len(mine) == 20 and theirs == mine


def test_exported_tokenizer_encodes_like_ours_with_its_special_tokens(tmp_path, tokenizer_path):
    from mlproject.data.tokenizer import load_tokenizer

    export_hf(model(), tokenizer_path, tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    ours = load_tokenizer(tokenizer_path)
    text = "import os\nprint('naïve café')"
    assert tok(text)["input_ids"] == ours.encode(text).ids
    assert tok.decode(tok(text)["input_ids"]) == text
    assert (tok.eos_token, tok.bos_token, tok.pad_token) == (EOT, EOT, PAD)
    assert tok.eos_token_id == ours.token_to_id(EOT)


@pytest.mark.parametrize("fields, field", [
    (dict(model_version="gpt3", bias=True), "bias=True"),
    (dict(mlp_type="swiglu"), "mlp_type='swiglu'"),
    (dict(pos_encoding="none"), "pos_encoding='none'"),
    (dict(pos_encoding="rope"), "pos_encoding='rope'"),
    (dict(LLAMA_LIKE, mlp_type="gelu"), "mlp_type='gelu'"),
    (dict(LLAMA_LIKE, bias=True), "bias=True"),
    (dict(LLAMA_LIKE, attention_pattern="alternating"), "attention_pattern='alternating'"),
])
def test_architecture_no_hf_class_holds_is_a_one_line_error_naming_the_field(tmp_path, tokenizer_path, fields,
                                                                              field):
    with pytest.raises(MlprojectError) as info:
        export_hf(model(**fields), tokenizer_path, tmp_path / "hf")
    message = str(info.value)
    assert f"{field} is held by no transformers class" in message and "\n" not in message
    assert "--allow-custom-code" in message and "runs that code" in message
    assert not (tmp_path / "hf").exists()


def test_gpt3_with_untrained_zero_query_bias_exports_to_gpt_neo():
    gpt3 = GPT(GPTConfig(preset=None, model_version="gpt3", n_layer=2, n_head=2, d_model=32, block_size=48,
                         vocab_size=64, attention_window=8))
    assert hf_class_for(gpt3) == "GPTNeoForCausalLM"  # biases start at zero: nothing is lost


def test_export_refuses_a_folder_that_is_not_an_earlier_export(tmp_path, tokenizer_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MlprojectError, match="is not an earlier export-hf output"):
        export_hf(model(), tokenizer_path, tmp_path)
    export_hf(model(), tokenizer_path, tmp_path / "hf")
    export_hf(model(model_version="gpt3", bias=False), tokenizer_path, tmp_path / "hf")  # replaces it
    assert "GPTNeo" in (tmp_path / "hf" / "config.json").read_text()


def test_exported_files_all_have_the_umasks_mode(tmp_path, tokenizer_path):
    """safetensors writes its file 0o600; the export gives it the mode its siblings have."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        export_hf(model(), tokenizer_path, tmp_path / "hf")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "hf").iterdir()}
    assert modes["model.safetensors"] == 0o644
    assert set(modes.values()) == {0o644}, modes
