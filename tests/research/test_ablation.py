"""`ablate`: values parsed by the axis's type, validated before any run, cost metrics aggregated."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from helpers import unique, write_sweep
from mlproject.cli import main
from mlproject.errors import ConfigError
from mlproject.research.ablation import AblationJob, parse_values, run_ablation


@pytest.mark.parametrize("axis, raw, parsed", [
    ("dropout", ["0", "0.1"], [0.0, 0.1]),
    ("gradient_checkpointing", ["false", "true"], [False, True]),
    ("n_layer", ["2", "4"], [2, 4]),
    ("norm_type", ["layernorm", "rmsnorm"], ["layernorm", "rmsnorm"]),
    ("attention_pattern", ["dense", "alternating"], ["dense", "alternating"]),
])
def test_values_are_parsed_by_the_axis_type(axis, raw, parsed):
    assert parse_values(axis, raw) == parsed


def test_unknown_axis_is_an_error_listing_the_axes():
    with pytest.raises(ConfigError, match="expected one of: norm_type, mlp_type"):
        parse_values("bias", ["true"])


def test_duplicate_values_are_an_error():
    with pytest.raises(ConfigError, match="more than once"):
        parse_values("dropout", ["0.1", "0.10"])


@pytest.mark.parametrize("flags, message", [
    (["--ablation-axis", "norm_type", "--ablation-values", "layernorm", "batchnorm"], "expected one of layernorm|rmsnorm"),
    (["--ablation-axis", "n_head", "--ablation-values", "2", "3"], "d_model=64 is not divisible by n_head=3"),
    (["--ablation-axis", "dropout", "--ablation-values", "0.1", "1.5"], "dropout=1.5 must be in"),
])
def test_invalid_value_or_combination_fails_before_any_run_exists(research_env, tmp_path, capsys, flags, message):
    experiment = unique("bad-ablation")
    path = write_sweep(tmp_path / "a.yaml", experiment)
    assert main(["ablate", "--config", str(path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert MlflowClient().get_experiment_by_name(experiment) is None


@pytest.mark.e2e
def test_speed_axis_children_log_cost_and_parent_aggregates_it(research_env, tmp_path):
    experiment = unique("ablation")
    path = write_sweep(tmp_path / "a.yaml", experiment, model={"model_version": "gpt3"},
                       extra={"ablation": {"ablation_axis": "attention_impl", "ablation_values": ["manual", "sdpa"],
                                           "seeds": [1]}})
    outcome = run_ablation(AblationJob.load(path))
    client = MlflowClient()
    children = client.search_runs([outcome.experiment_id], f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'")
    assert sorted((c.data.tags["mlproject.ablation_value"], c.data.params["model.attention_impl"])
                  for c in children) == [("manual", "manual"), ("sdpa", "sdpa")]
    parent = client.get_run(outcome.parent_run_id)
    assert parent.data.tags["mlproject.ablation_axis"] == "attention_impl"
    for group in ("manual", "sdpa"):
        assert parent.data.metrics[f"tokens_per_sec/{group}/mean"] > 0
        assert f"peak_mem_mb/{group}/mean" in parent.data.metrics
        assert f"val_loss_best/{group}/mean" in parent.data.metrics
