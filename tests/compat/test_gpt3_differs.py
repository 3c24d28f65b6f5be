"""GPT-3 differs from GPT-2 wherever it is compared, and no sweep compares a model with itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from helpers import REPO
from mlproject.errors import ConfigError
from mlproject.model.config import GPTConfig
from mlproject.model.gpt import GPT

SHIPPED = sorted((REPO / "configs" / "compare").glob("*.yaml")) + sorted((REPO / "configs" / "ablation").glob("*.yaml"))


def _logits(cfg: GPTConfig, state: dict | None = None) -> tuple[torch.Tensor, dict]:
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    if state is not None:
        model.load_state_dict(state)
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.block_size), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = model(idx)
    return logits, model.state_dict()


def test_gpt3_logits_differ_from_gpt2_at_the_originals_block_size_256():
    base = GPTConfig(preset="nano", block_size=256, vocab_size=128)
    gpt2, weights = _logits(base)
    gpt3, _ = _logits(dataclasses.replace(base, model_version="gpt3"), weights)  # the same weights
    assert (gpt3 - gpt2).abs().max().item() > 1e-3


@pytest.mark.parametrize("block_size", [2, 8, 64, 256, 1024, 2048, 8192])
def test_default_window_binds_at_every_block_size(block_size: int):
    cfg = GPTConfig(model_version="gpt3", block_size=block_size).resolved()
    assert cfg.attention_pattern == "alternating"
    assert 1 <= cfg.attention_window < block_size


def test_window_at_least_the_block_size_is_an_error_naming_both_fields():
    with pytest.raises(ConfigError, match=r"attention_window=256 is not below block_size=256"):
        GPTConfig(model_version="gpt3", block_size=256, attention_window=256).resolved()


def test_dense_pattern_asks_for_full_attention_explicitly():
    cfg = GPTConfig(model_version="gpt3", block_size=64, attention_window=64, attention_pattern="dense").resolved()
    assert cfg.attention_pattern == "dense"


def test_an_old_checkpoint_whose_band_masked_nothing_loads_as_the_dense_model_it_was(tmp_path: Path):
    from mlproject.model.checkpoint import load_model_checkpoint, model_state, save_checkpoint

    dense = GPTConfig(model_version="gpt3", preset=None, n_layer=2, n_head=2, d_model=32, block_size=16,
                      vocab_size=64, attention_pattern="dense")
    expected, weights = _logits(dense)
    torch.manual_seed(0)
    state = model_state(GPT(dense))
    state["model_config"].update(attention_pattern="alternating", attention_window=256)  # the old default
    model, _ = load_model_checkpoint(save_checkpoint(tmp_path / "old.pt", state))
    got, _ = _logits(model.config, weights)
    assert torch.equal(got, expected)


# ----------------------------------------------------------------------------- sweeps

def _spec(kind: str, path: Path | None = None, args=None):
    from mlproject.research.ablation import AblationJob
    from mlproject.research.compare import CompareJob

    job = (CompareJob if kind == "compare" else AblationJob).load(path, args)
    return job.spec()


def _args(command: str):
    from mlproject.cli import build_parser

    return build_parser().parse_args(command.split())


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_compares_models_that_differ(path: Path):
    from mlproject.research.distinct import architecture, check_groups_differ

    spec = _spec("compare" if path.parent.name == "compare" else "ablation", path)
    check_groups_differ(spec)
    models = {c.group: architecture(c.cfg.model) for c in spec.children}
    assert len({repr(sorted(a.items())) for a in models.values()}) == len(spec.groups) >= 2


def test_compare_of_gpt2_with_a_dense_gpt3_is_refused_before_any_run(tmp_path: Path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from mlproject.research.sweep import run_sweep

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    try:
        spec = _spec("compare", args=_args("compare --models gpt2 gpt3 --attention-pattern dense --seeds 1 2 "
                                           "--block-size 32 --experiment-name identical"))
        with pytest.raises(ConfigError, match=r"groups 'gpt2' and 'gpt3' build the same model"):
            run_sweep(spec)
        assert MlflowClient(tracking_uri=uri).get_experiment_by_name("identical") is None
    finally:
        mlflow.set_tracking_uri(None)


def test_ablation_of_values_that_build_the_same_function_is_refused():
    from mlproject.research.distinct import check_groups_differ

    # A single layer has no banded layer (only odd layers are banded), so the window changes nothing.
    spec = _spec("ablation", args=_args("ablate --model-version gpt3 --n-layer 1 --block-size 32 "
                                        "--ablation-axis attention_window --ablation-values 4 8 --seeds 1"))
    with pytest.raises(ConfigError, match=r"groups '4' and '8' build the same model"):
        check_groups_differ(spec)


def test_a_speed_ablation_compares_the_same_function_on_purpose():
    from mlproject.research.distinct import check_groups_differ

    check_groups_differ(_spec("ablation", args=_args("ablate --ablation-axis attention_impl "
                                                     "--ablation-values manual sdpa --seeds 1")))
