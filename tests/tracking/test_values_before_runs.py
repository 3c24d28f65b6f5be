"""Non-finite, out-of-domain and contradicting values are refused with one line before any run
exists; a loss that becomes non-finite stops its run FAILED with no model logged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from mlproject.cli import main
from mlproject.data.tokenizer import save_tokenizer, train_tokenizer
from mlproject.model.checkpoint import save_model_checkpoint
from mlproject.model.config import GPTConfig
from mlproject.model.gpt import GPT


def _run_count() -> int:
    """Every run in the store, in every experiment (deleted ones too)."""
    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments(view_type=3)]
    return len(client.search_runs(ids, run_view_type=3, max_results=50000)) if ids else 0


def _refused(argv: list[str], capsys, *expected: str) -> str:
    """Run `argv`; assert exit code 2, one error line holding `expected`, and no new run."""
    before = _run_count()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlproject: error: ") and "\n" not in err, err
    for text in expected:
        assert text in err, err
    assert _run_count() == before, "no run is created for a refused command"
    return err


@pytest.mark.parametrize("flag, value, field", [
    ("--learning-rate", "nan", "learning_rate='nan'"),
    ("--learning-rate", "inf", "learning_rate='inf'"),
    ("--learning-rate", "-inf", "learning_rate='-inf'"),
    ("--learning-rate", "1e999", "learning_rate='1e999'"),
    ("--weight-decay", "nan", "weight_decay='nan'"),
    ("--weight-decay", "-0.1", "weight_decay=-0.1"),
    ("--beta2", "1.0", "beta2=1.0"),
    ("--grad-clip", "nan", "grad_clip='nan'"),
    ("--dropout", "1.0", "dropout=1.0"),
    ("--dropout", "nan", "dropout='nan'"),
    ("--rope-theta", "0", "rope_theta=0.0"),
    ("--val-fraction", "inf", "val_fraction='inf'"),
    ("--system-metrics-interval", "nan", "system_metrics_interval='nan'"),
])
def test_train_refuses_a_non_finite_or_out_of_domain_float(tiny_yaml, capsys, flag, value, field):
    _refused(["train", "--config", str(tiny_yaml()), flag, value], capsys, field)


@pytest.mark.parametrize("argv, expected", [
    (["--temperature", "nan"], "temperature='nan'"),
    (["--temperature", "-1"], "temperature=-1.0"),
    (["--top-p", "nan"], "top_p='nan'"),
    (["--strategy", "greedy", "--temperature", "0.8"], "temperature=0.8 contradicts strategy='greedy'"),
])
def test_generate_refuses_bad_sampling_values(capsys, argv, expected):
    _refused(["generate", "--checkpoint", "missing.pt", *argv], capsys, expected)


@pytest.mark.parametrize("argv, expected", [
    (["compare", "--seeds", "7", "7"], "seeds=[7, 7] has 7 more than once"),
    (["compare", "--models", "gpt2", "gpt2"], "models=['gpt2', 'gpt2'] has gpt2 more than once"),
    (["ablate", "--seeds", "7", "7"], "seeds=[7, 7] has 7 more than once"),
    (["ablate", "--ablation-values", "rmsnorm", "rmsnorm"], "rmsnorm more than once"),
    (["tune", "--then-compare", "true", "--compare-seeds", "1", "1"], "compare_seeds=[1, 1] has 1 more than once"),
])
def test_sweeps_refuse_duplicate_groups_and_seeds_alike(tiny_yaml, capsys, argv, expected):
    _refused([*argv[:1], "--config", str(tiny_yaml()), *argv[1:]], capsys, expected)


def test_dataloaders_refuses_a_negative_preview_count(capsys):
    _refused(["dataloaders", "--preview-batches", "-1"], capsys, "preview_batches=-1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("command", ["train", "compare"])
def test_device_cuda_without_a_gpu_is_refused_before_any_run(tiny_yaml, capsys, command):
    _refused([command, "--config", str(tiny_yaml()), "--device", "cuda"], capsys, "device='cuda'")


@pytest.mark.parametrize("content", [b"root:x:0:0:root:/root:/bin/bash\n", b""])
def test_a_resume_file_that_is_no_checkpoint_is_refused_before_any_run(tiny_yaml, tmp_path, capsys, content):
    bogus = tmp_path / "passwd"
    bogus.write_bytes(content)
    _refused(["train", "--config", str(tiny_yaml()), "--resume-from", str(bogus)], capsys, str(bogus))


@pytest.fixture
def small_tokenizer_checkpoint(tmp_path) -> tuple[Path, Path]:
    """(checkpoint of a 1,024-row model, tokenizer of about 300 tokens): not from the same run."""
    tokenizer = save_tokenizer(train_tokenizer(["def f(x):\n    return x\n"] * 50, 300), tmp_path / "tok.json")
    gpt = GPT(GPTConfig(preset=None, n_layer=1, n_head=2, d_model=32, block_size=16, vocab_size=1024))
    return save_model_checkpoint(tmp_path / "model.pt", gpt), tokenizer


def test_generate_refuses_a_tokenizer_much_smaller_than_the_model(small_tokenizer_checkpoint, capsys):
    checkpoint, tokenizer = small_tokenizer_checkpoint
    _refused(["generate", "--checkpoint", str(checkpoint), "--tokenizer-path", str(tokenizer)], capsys,
             "tokens but the model's vocabulary is 1024")


# ----------------------------------------------------------------------------- non-finite loss

def _runs(experiment_name: str) -> list:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.mark.e2e
def test_a_loss_that_becomes_non_finite_fails_the_run_with_no_model(tiny_yaml, experiment_name, capsys):
    config = tiny_yaml(tracking={"log_model": True})
    assert main(["train", "--config", str(config), "--learning-rate", "1e30"]) == 2
    err = capsys.readouterr().err.strip()
    assert "train_loss became" in err and "--allow-nonfinite" in err and "\n" not in err
    (run,) = _runs(experiment_name)
    assert run.info.status == "FAILED"
    assert not MlflowClient().search_logged_models([run.info.experiment_id]), "no model logged"


@pytest.mark.e2e
def test_allow_nonfinite_trains_on(tiny_yaml, experiment_name):
    config = tiny_yaml(train={"max_steps": 4})
    assert main(["train", "--config", str(config), "--learning-rate", "1e30", "--allow-nonfinite", "true"]) == 0
    (run,) = _runs(experiment_name)
    assert run.info.status == "FINISHED"


def test_allow_nonfinite_is_no_part_of_a_sweep_key(tiny_config):
    from mlproject.research.sweep import sweep_key

    base = tiny_config()
    allowing = base.replace(runtime={"allow_nonfinite": True})
    assert sweep_key("compare", base, [], {}) == sweep_key("compare", allowing, [], {})
