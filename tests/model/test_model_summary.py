"""`mlproject summary`: one row per version x preset, with a real training step."""

from __future__ import annotations

import math

import pytest

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
