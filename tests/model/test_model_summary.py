"""`mlproject summary`: one row per version x preset, with a real training step."""

from __future__ import annotations

import math

import pytest
import torch

from mlproject.errors import ConfigError
from mlproject.model.summary import VOCAB_SIZE, run_summary


def test_summary_prints_a_row_per_version_and_preset_with_a_finite_loss(capsys):
    rows = run_summary(presets=["nano"], model_versions=["gpt2", "gpt3"], block_size=32)
    out = capsys.readouterr().out
    assert [(r["model_version"], r["preset"]) for r in rows] == [("gpt2", "nano"), ("gpt3", "nano")]
    assert "4/4/256" in out and out.count("nano") == 2
    for row in rows:
        assert abs(row["loss"] - math.log(VOCAB_SIZE)) < 0.5  # random tokens at initialisation
        assert row["step_tokens"] == 2 * 32 and row["step_seconds"] > 0
        assert row["params"] > row["params_non_embedding"] > 0


def test_summary_rejects_an_unknown_preset():
    with pytest.raises(ConfigError, match="preset='tiny'"):
        run_summary(presets=["tiny"], model_versions=["gpt2"], block_size=32)


@pytest.mark.parametrize("flags, vocab", [([], 8192), (["--dataset", "small"], 16384),
                                          (["--dataset", "small", "--vocab-size", "1000"], 1024)])
def test_summary_counts_parameters_at_the_datasets_vocabulary(capsys, flags, vocab):
    """A run's embedding has its tokenizer's rows (padded to 64), so the table counts those, not GPT-2's 50304."""
    from mlproject.cli import main
    from mlproject.model.config import GPTConfig
    from mlproject.model.gpt import GPT

    assert main(["summary", "--presets", "nano", "--model-versions", "gpt2", "--block-size", "16", *flags]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"vocab {vocab}, ")
    with torch.device("meta"):
        expected = GPT(GPTConfig(model_version="gpt2", preset="nano", block_size=16, vocab_size=vocab).resolved())
    assert f"{expected.num_params() / 1e6:>9.1f}M" in out.splitlines()[-1]
