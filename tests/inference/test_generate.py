"""generate(): KV cache, batching of unequal prompts, seeds, stopping, streaming; generate_text()."""

from __future__ import annotations

import os

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from mlproject.errors import MlprojectError
from mlproject.inference.config import GenerateConfig
from mlproject.inference.generate import generate, generate_text
from mlproject.model.config import GPTConfig
from mlproject.model.gpt import GPT

VOCAB = 101


@pytest.fixture(scope="module")
def model() -> GPT:
    """A random model with large weights, so greedy outputs vary from token to token."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=2, n_head=2, d_model=64, block_size=32, vocab_size=VOCAB, attention_impl="manual"))
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    return m.eval()


def test_cache_and_no_cache_greedy_outputs_are_identical(model):
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8], [9]]
    cached = generate(model, prompts, 20, temperature=0)
    uncached = generate(model, prompts, 20, temperature=0, use_cache=False)
    assert cached == uncached
    assert len({t for out in cached for t in out}) > 3  # not a degenerate constant output


def test_unequal_prompt_lengths_give_the_same_result_as_one_at_a_time(model):
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]]
    batched = generate(model, prompts, 8, temperature=0)
    single = [generate(model, [p], 8, temperature=0)[0] for p in prompts]
    assert batched == single


def test_sampling_is_deterministic_with_a_seed(model):
    prompts = [[1, 2], [3, 4]]
    a = generate(model, prompts, 10, generator=torch.Generator().manual_seed(5), top_k=20)
    b = generate(model, prompts, 10, generator=torch.Generator().manual_seed(5), top_k=20)
    c = generate(model, prompts, 10, generator=torch.Generator().manual_seed(6), top_k=20)
    assert a == b and a != c


def test_generation_stops_at_eot_without_emitting_it(model):
    free = generate(model, [[1, 2, 3]], 10, temperature=0)[0]
    eot = free[4]
    stopped = generate(model, [[1, 2, 3]], 10, temperature=0, eot_id=eot)[0]
    assert stopped == free[: free.index(eot)]


def test_on_token_streams_every_new_token_with_its_prompt_index(model):
    seen = []
    out = generate(model, [[1, 2], [3], [4, 5]], 5, temperature=0, on_token=lambda i, t: seen.append((i, t)))
    for i, tokens in enumerate(out):
        assert [t for j, t in seen if j == i] == tokens


def test_vocab_limit_forbids_padded_ids(model):
    out = generate(model, [[1, 2, 3]], 30, temperature=3.0, vocab_limit=10,
                   generator=torch.Generator().manual_seed(0))[0]
    assert len(out) == 30 and max(out) < 10


def test_cache_beyond_block_size_is_a_clear_error(model):
    with pytest.raises(MlprojectError, match="block_size=32"):
        generate(model, [[1] * 20], 20, temperature=0)


def test_without_cache_generation_slides_past_block_size(model):
    out = generate(model, [[1] * 20], 20, temperature=0, use_cache=False)[0]
    assert len(out) == 20


def test_empty_prompt_is_an_error(model):
    with pytest.raises(MlprojectError, match="empty"):
        generate(model, [[]], 3)


def test_generation_leaves_the_training_mode_as_it_was(model):
    model.train()
    generate(model, [[1]], 2)
    assert model.training
    model.eval()


def _char_tokenizer() -> Tokenizer:
    """A byte-level tokenizer with the 100 first ids: enough for ASCII prompts."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet)[:VOCAB - 1])}
    vocab["<|endoftext|>"] = VOCAB - 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def test_generate_text_returns_prompt_plus_continuation(model, capsys):
    tok = _char_tokenizer()
    cfg = GenerateConfig(prompts=["ab", "xyz"], max_new_tokens=6, temperature=0, stream=False)
    texts = generate_text(model, tok, cfg, eot_id=VOCAB - 1)
    assert texts[0].startswith("ab") and texts[1].startswith("xyz")
    ids = [tok.encode(p).ids for p in cfg.prompts]
    expected = generate(model, ids, 6, temperature=0, eot_id=VOCAB - 1, vocab_limit=tok.get_vocab_size())
    assert texts == [tok.decode(i + e) for i, e in zip(ids, expected)]
    assert texts[1] in capsys.readouterr().out


def test_generate_text_streams_the_same_text_it_returns(model, capsys):
    tok = _char_tokenizer()
    cfg = GenerateConfig(prompts=["ab"], max_new_tokens=6, temperature=0, stream=True)
    (text,) = generate_text(model, tok, cfg, eot_id=VOCAB - 1)
    assert capsys.readouterr().out == text + "\n"


def test_generate_text_is_reproducible_with_a_seed(model, capsys):
    tok = _char_tokenizer()
    cfg = GenerateConfig(prompts=["ab", "cd"], max_new_tokens=8, seed=3, stream=False)
    assert generate_text(model, tok, cfg, eot_id=None) == generate_text(model, tok, cfg, eot_id=None)


def test_generate_text_starts_an_empty_prompt_from_eot(model, capsys):
    tok = _char_tokenizer()
    cfg = GenerateConfig(prompts=[""], max_new_tokens=4, temperature=0, stream=False, stop_at_eos=False)
    (text,) = generate_text(model, tok, cfg, eot_id=VOCAB - 1)
    expected = generate(model, [[VOCAB - 1]], 4, temperature=0, vocab_limit=tok.get_vocab_size())[0]
    assert text == tok.decode([VOCAB - 1] + expected)


def test_generate_from_a_local_checkpoint_needs_no_tracking_store(tmp_path):
    """A local checkpoint outside `mlflow run` is generated from without importing MLflow (its
    import alone took seconds of a 20-token generate), and without touching a store."""
    import subprocess
    import sys

    from mlproject.data.tokenizer import save_tokenizer, train_tokenizer
    from mlproject.model.checkpoint import save_model_checkpoint

    texts = ["def add(a, b):\n    return a + b\n", "The quick brown fox jumps over the lazy dog."] * 40
    tokenizer = save_tokenizer(train_tokenizer(texts, 300), tmp_path / "tokenizer.json")
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(preset=None, n_layer=1, n_head=2, d_model=32, block_size=16, vocab_size=320))
    checkpoint = save_model_checkpoint(tmp_path / "model.pt", gpt)
    code = ("import sys; from mlproject.cli import main; "
            f"code = main(['generate', '--checkpoint', {str(checkpoint)!r}, '--tokenizer-path', {str(tokenizer)!r}, "
            "'--max-new-tokens', '5', '--prompt', 'def ', '--temperature', '0']); "
            "print('MLFLOW_IMPORTED', 'mlflow' in sys.modules); sys.exit(code)")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "MLFLOW_IMPORTED False" in done.stdout
    assert "def " in done.stdout
    assert not list(tmp_path.glob("mlflow.db")) and not (tmp_path / "mlruns").exists()
