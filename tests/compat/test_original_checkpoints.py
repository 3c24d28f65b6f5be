"""The original suite's checkpoints load: every GPT2/GPT3 variant gives the reference's logits.

The checkpoints are written by `original_reference` as the original's train.py writes them
(`<name>.last.pt` = {model_state, history, run_config, tokenizer_vocab_size}, with its
parameter names), then read by `generate` / `evaluate` / `export-hf` directly or converted
by `mlproject import-original`.
"""

from __future__ import annotations

import argparse
import itertools

import pytest
import torch

from mlproject.cli import main
from mlproject.errors import MlprojectError
from mlproject.model.checkpoint import load_checkpoint, load_model_checkpoint
from original_reference import OriginalGPT, randomize, run_config, save_last_checkpoint

VOCAB = 61
TINY = dict(n_layer=2, n_head=2, d_model=16, block_size=16, layernorm_eps=1e-3, rope_base=500, mlp_expansion=3,
            resid_dropout=0.2)
VARIANTS = list(itertools.product(("gpt2", "gpt3"), ("layernorm", "rmsnorm"), ("gelu", "swiglu"),
                                  ("learned", "rope", "none"), ("manual", "sdpa")))


def original_checkpoint(path, seed=0, vocab=VOCAB, **overrides):
    """(reference model, path of its `.last.pt`) for a tiny run_config with `overrides`."""
    cfg = run_config(**{**TINY, **overrides})
    reference = randomize(OriginalGPT(cfg, vocab), seed)
    return reference, save_last_checkpoint(reference, cfg, path)


def max_logit_gap(model, reference, T=16, seed=1):
    idx = torch.randint(0, VOCAB, (3, T), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return (model(idx)[0] - reference(idx)).abs().max().item()


@pytest.mark.parametrize("version,norm,mlp,pos,attention", VARIANTS, ids=["-".join(v) for v in VARIANTS])
def test_every_variant_loads_with_the_reference_logits(tmp_path, version, norm, mlp, pos, attention):
    reference, path = original_checkpoint(tmp_path / "run.last.pt", model_version=version, norm_type=norm,
                                          mlp_type=mlp, pos_encoding=pos, attention_impl=attention)

    model, state = load_model_checkpoint(path)

    assert not model.training
    assert max_logit_gap(model, reference) < 1e-4
    assert max_logit_gap(model, reference, T=5, seed=2) < 1e-4  # a shorter sequence: positions from 0
    assert state["step"] == 7


def test_the_mapped_config_holds_what_the_original_computes(tmp_path):
    _, path = original_checkpoint(tmp_path / "run.last.pt", model_version="gpt3", mlp_type="swiglu")
    cfg = load_model_checkpoint(path)[0].config
    assert (cfg.gelu_approximate, cfg.attention_pattern, cfg.norm_eps, cfg.rope_theta) == ("none", "dense", 1e-3, 500.0)
    assert (cfg.mlp_hidden, cfg.bias, cfg.tie_embeddings, cfg.resid_dropout, cfg.dropout) == (48, True, True, 0.2, 0.1)
    _, path = original_checkpoint(tmp_path / "gpt2.last.pt", model_version="gpt2")
    cfg = load_model_checkpoint(path)[0].config
    assert (cfg.mlp_hidden, cfg.resid_dropout) == (64, None)  # GPT2 ignores mlp_expansion and resid_dropout


def test_kv_cache_decoding_of_an_imported_rope_model_matches_the_reference(tmp_path):
    reference, path = original_checkpoint(tmp_path / "run.last.pt", pos_encoding="rope", model_version="gpt3")
    model, _ = load_model_checkpoint(path)
    idx = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(3))
    cache = model.new_kv_cache(1)
    with torch.no_grad():
        model(idx[:, :7], kv_cache=cache)
        last, _ = model(idx[:, 7:], kv_cache=cache)
        assert (last - reference(idx)[:, 7:]).abs().max().item() < 1e-4


def test_a_research_run_last_checkpoint_with_nested_model_cfg_loads(tmp_path):
    reference, _ = original_checkpoint(tmp_path / "unused.pt", model_version="gpt3", norm_type="rmsnorm")
    model_cfg = {key: reference.cfg[key] for key in ("block_size", "n_layer", "n_head", "d_model", "norm_type",
                                                    "layernorm_eps", "mlp_expansion")}
    run_cfg = {"run_name": "gpt3_seed42", "model_version": "gpt3", "model_cfg": model_cfg,
               "train_cfg": {"epochs": 1}, "runtime_cfg": {"seed": 42}, "params_total": 1, "params_trainable": 1}
    path = tmp_path / "last.pt"
    torch.save({"model_state": reference.state_dict(), "run_config": run_cfg, "history": {}}, path)

    model, _ = load_model_checkpoint(path)

    assert max_logit_gap(model, reference) < 1e-4


def test_import_original_writes_our_checkpoint_with_the_same_logits(tmp_path, capsys):
    reference, path = original_checkpoint(tmp_path / "gpt3_small.last.pt", model_version="gpt3",
                                          pos_encoding="rope", mlp_type="swiglu")
    output = tmp_path / "imported.pt"

    assert main(["import-original", "--checkpoint", str(path), "--output", str(output)]) == 0

    assert f"wrote {output} (gpt3" in capsys.readouterr().out
    assert load_checkpoint(output)["format"] == "mlproject-checkpoint"
    model, state = load_model_checkpoint(output)
    assert max_logit_gap(model, reference) < 1e-4
    assert state["step"] == 7 and state["original_run_config"]["rope_base"] == 500


def test_a_best_checkpoint_imports_with_the_runs_config_json(tmp_path, capsys):
    import json

    reference, _ = original_checkpoint(tmp_path / "unused.pt")
    best = tmp_path / "gpt2_small.pt"  # the training loop's best: no run_config
    torch.save({"model_state": reference.state_dict(), "optimizer_state": {"state": {}, "param_groups": []},
                "epoch": 3, "global_step": 12, "val_loss": 2.5}, best)
    config_json = tmp_path / "gpt2_small_config.json"
    config_json.write_text(json.dumps(reference.cfg))

    assert main(["generate", "--checkpoint", str(best), "--tokenizer-path", str(tmp_path / "t.json")]) == 2
    assert "without run_config" in capsys.readouterr().err
    assert main(["import-original", "--checkpoint", str(best), "--output", str(tmp_path / "y.pt"),
                 "--run-config", str(config_json)]) == 0
    model, state = load_model_checkpoint(tmp_path / "y.pt")
    assert max_logit_gap(model, reference) < 1e-4 and state["step"] == 12


# ----------------------------------------------------------------------------- refusals

def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("mlproject: error:") and err.count("\n") == 1, err
    return err


def test_a_checkpoint_of_another_shape_is_a_one_line_error_naming_the_tensor(tmp_path, capsys):
    reference, _ = original_checkpoint(tmp_path / "unused.pt")
    path = tmp_path / "wrong.last.pt"
    save_last_checkpoint(reference, run_config(**{**TINY, "d_model": 32}), path)  # run_config disagrees

    assert main(["import-original", "--checkpoint", str(path), "--output", str(tmp_path / "y.pt")]) == 2

    err = one_line_error(capsys)
    assert "emb.tok_emb.weight has shape (61, 16) in model_state but (61, 32)" in err and "d_model=32" in err
    assert not (tmp_path / "y.pt").exists()


def test_a_block_size_mismatch_names_the_position_table(tmp_path):
    reference, _ = original_checkpoint(tmp_path / "unused.pt")
    path = save_last_checkpoint(reference, run_config(**{**TINY, "block_size": 32}), tmp_path / "x.last.pt")
    with pytest.raises(MlprojectError, match=r"emb.pos_emb.weight has shape \(16, 16\) in model_state but \(32, 16\)"):
        load_model_checkpoint(path)


def test_an_unknown_or_missing_tensor_is_named(tmp_path):
    reference, _ = original_checkpoint(tmp_path / "unused.pt")
    state = reference.state_dict()
    torch.save({"model_state": {**state, "blocks.0.attn.extra": torch.zeros(2)}, "run_config": reference.cfg},
               tmp_path / "extra.last.pt")
    with pytest.raises(MlprojectError, match="model_state has 'blocks.0.attn.extra', unknown to the original's gpt2"):
        load_model_checkpoint(tmp_path / "extra.last.pt")
    # a rope run_config for learned-position weights: emb.pos_emb is unknown to that architecture
    torch.save({"model_state": state, "run_config": {**reference.cfg, "pos_encoding": "rope"}}, tmp_path / "r.pt")
    with pytest.raises(MlprojectError, match="'emb.pos_emb.weight', unknown .* pos_encoding=rope"):
        load_model_checkpoint(tmp_path / "r.pt")
    del state["blocks.1.mlp.fc2.bias"]
    torch.save({"model_state": state, "run_config": reference.cfg}, tmp_path / "missing.last.pt")
    with pytest.raises(MlprojectError, match="model_state lacks 'blocks.1.mlp.fc2.bias'"):
        load_model_checkpoint(tmp_path / "missing.last.pt")


def test_a_bad_run_config_value_is_a_one_line_error_naming_it(tmp_path, capsys):
    reference, _ = original_checkpoint(tmp_path / "unused.pt")
    path = save_last_checkpoint(reference, {**reference.cfg, "norm_type": "batchnorm"}, tmp_path / "x.last.pt")
    assert main(["import-original", "--checkpoint", str(path), "--output", str(tmp_path / "y.pt")]) == 2
    assert "norm_type" in one_line_error(capsys)
    path = save_last_checkpoint(reference, {"model_version": "gpt2"}, tmp_path / "z.last.pt")
    with pytest.raises(MlprojectError, match="run_config has no block_size, n_layer, n_head, d_model"):
        load_model_checkpoint(path)


def test_a_checkpoint_holding_code_objects_is_refused_without_unpickling(tmp_path, capsys):
    reference, _ = original_checkpoint(tmp_path / "unused.pt")
    path = tmp_path / "pickled.last.pt"
    torch.save({"model_state": reference.state_dict(), "run_config": argparse.Namespace(**reference.cfg)}, path)

    assert main(["import-original", "--checkpoint", str(path), "--output", str(tmp_path / "y.pt")]) == 2

    err = one_line_error(capsys)
    assert "refused by the weights-only loader" in err and "argparse.Namespace" in err


def test_our_own_checkpoint_is_not_taken_for_an_original_one(tmp_path, capsys):
    _, path = original_checkpoint(tmp_path / "run.last.pt")
    assert main(["import-original", "--checkpoint", str(path), "--output", str(tmp_path / "ours.pt")]) == 0
    assert main(["import-original", "--checkpoint", str(tmp_path / "ours.pt"), "--output", str(tmp_path / "z.pt")]) == 2
    assert "is not a checkpoint of the original suite" in one_line_error(capsys)


def test_training_resume_from_an_original_checkpoint_points_to_the_importer(tmp_path):
    _, path = original_checkpoint(tmp_path / "run.last.pt")
    with pytest.raises(MlprojectError, match="not an mlproject checkpoint.*original suite's checkpoint.*import-original"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- commands

@pytest.fixture
def tokenizer_path(tmp_path):
    from mlproject.data.tokenizer import save_tokenizer, train_tokenizer

    texts = ["def add(a, b):\n    return a + b\n", "class Point:\n    x = 0\n"] * 20
    return save_tokenizer(train_tokenizer(texts, 280), tmp_path / "tokenizer.json")


def reference_greedy(reference, tokenizer_path, prompt, steps):
    from mlproject.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    ids = tokenizer.encode(prompt).ids
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(reference(torch.tensor([ids]))[0, -1].argmax()))
    return tokenizer.decode(ids)


def test_generate_reads_an_original_checkpoint_and_its_import_alike(tmp_path, tokenizer_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens: no store is used
    reference, path = original_checkpoint(tmp_path / "gpt2_small.last.pt", vocab=280, pos_encoding="rope",
                                          attention_impl="sdpa", block_size=32)
    flags = ["--tokenizer-path", str(tokenizer_path), "--prompts", "def", "--max-new-tokens", "10",
             "--strategy", "greedy", "--stop-at-eos", "false", "--stream", "false"]

    assert main(["generate", "--checkpoint", str(path), *flags]) == 0
    direct = capsys.readouterr().out
    assert main(["import-original", "--checkpoint", str(path), "--output", str(tmp_path / "y.pt")]) == 0
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(tmp_path / "y.pt"), *flags]) == 0
    imported = capsys.readouterr().out

    assert direct == imported == f"---\n{reference_greedy(reference, tokenizer_path, 'def', 10)}\n"


def test_evaluate_reads_an_original_checkpoint_and_its_import_alike(tmp_path, tokenizer_path, capsys):
    _, path = original_checkpoint(tmp_path / "gpt2_small.last.pt", vocab=280, block_size=32)
    text = tmp_path / "held_out.txt"
    text.write_text("def add(a, b):\n    return a + b\n" * 30)
    flags = ["--tokenizer-path", str(tokenizer_path), "--local-path", str(text), "--local-format", "text",
             "--log-to-mlflow", "false", "--batch-size", "2", "--device", "cpu"]

    assert main(["evaluate", "--checkpoint", str(path), *flags]) == 0
    direct = capsys.readouterr().out
    assert main(["import-original", "--checkpoint", str(path), "--output", str(tmp_path / "y.pt")]) == 0
    assert main(["evaluate", "--checkpoint", str(tmp_path / "y.pt"), *flags]) == 0
    imported = capsys.readouterr().out.split("\n", 1)[1]  # past import-original's line

    def metrics(out):
        return [line for line in out.splitlines() if "held_out" in line and "sha256" not in line]

    assert metrics(direct) and metrics(direct) == metrics(imported)


def test_export_hf_of_an_original_checkpoint_matches_the_reference(tmp_path, tokenizer_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reference, path = original_checkpoint(tmp_path / "gpt2_small.last.pt", vocab=280)

    assert main(["export-hf", "--checkpoint", str(path), "--tokenizer-path", str(tokenizer_path),
                 "--output", str(tmp_path / "hf")]) == 0

    hf_model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert hf_model.config.activation_function == "gelu"  # the original's exact GELU
    idx = torch.randint(0, 280, (2, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (hf_model(idx).logits - reference(idx)).abs().max().item() < 1e-4
