"""Tokenizer-independent sweeps: a vocab_size ablation compares bits per byte, `--metric
val_bpb_best` and `--eval-datasets` aggregate across seeds like the training metrics."""

from __future__ import annotations

from mlflow import MlflowClient

import pytest

from helpers import children_of, unique, write_sweep
from mlproject.cli import main
from mlproject.research.ablation import AblationJob, run_ablation
from mlproject.research.eval_metrics import with_eval_metrics


def test_vocab_size_ablation_trains_a_tokenizer_per_value_and_aggregates_bpb_by_default(research_env, tmp_path,
                                                                                        capsys):
    path = write_sweep(tmp_path / "a.yaml", unique("vocab"),
                       extra={"ablation": {"ablation_axis": "vocab_size", "ablation_values": ["300", "512"],
                                           "seeds": [1]}})
    job = AblationJob.load(path)
    assert "val_loss is nats per token of each tokenizer and is not comparable" in capsys.readouterr().err
    assert job.metrics == ["val_bpb_best"]
    outcome = run_ablation(job)
    children = children_of(outcome.parent_run_id)
    assert sorted((c.data.params["data.vocab_size"], c.data.params["dataset.vocab_size"]) for c in children) == [
        ("300", "300"), ("512", "512")]
    assert len({c.data.params["dataset.tokenizer_hash"] for c in children}) == 2
    parent = MlflowClient().get_run(outcome.parent_run_id).data.metrics
    for group in ("300", "512"):
        assert parent[f"val_bpb_best/{group}/mean"] > 0
        assert f"val_loss_best/{group}/mean" not in parent
    assert "val_bpb_best/512-300/mean_diff" in parent


def test_per_token_metrics_asked_for_explicitly_are_kept_with_a_warning(research_env, tmp_path, capsys):
    path = write_sweep(tmp_path / "a.yaml", unique("vocab"),
                       extra={"ablation": {"ablation_axis": "vocab_size", "ablation_values": ["300", "512"],
                                           "seeds": [1], "metrics": ["val_loss_best", "val_bpb_best"]}})
    assert AblationJob.load(path).metrics == ["val_loss_best", "val_bpb_best"]
    assert "val_loss_best is per token and not comparable" in capsys.readouterr().err


def test_a_vocab_size_ablation_with_a_fixed_tokenizer_is_refused_before_any_run(research_env, tmp_path, capsys):
    experiment = unique("vocab")
    path = write_sweep(tmp_path / "a.yaml", experiment, data={"tokenizer_path": str(tmp_path / "t.json")})
    assert main(["ablate", "--config", str(path), "--ablation-axis", "vocab_size", "--ablation-values", "300",
                 "512"]) == 2
    err = capsys.readouterr().err
    assert "drop data.tokenizer_path" in err and err.count("mlproject: error") == 1
    assert MlflowClient().get_experiment_by_name(experiment) is None


@pytest.mark.e2e
def test_compare_eval_datasets_are_evaluated_per_child_and_aggregated_with_bpb_metric(research_env, tmp_path,
                                                                                       capsys):
    experiment = unique("compare-eval")
    path = write_sweep(tmp_path / "c.yaml", experiment, model={"attention_window": 8})
    assert main(["compare", "--config", str(path), "--models", "gpt2", "gpt3", "--seeds", "1", "2",
                 "--metric", "val_bpb_best", "--eval-datasets", "pydocs"]) == 0
    out = capsys.readouterr().out
    assert "val_bpb_best (95% t CI" in out and "eval/pydocs/bpb (95% t CI" in out
    client = MlflowClient()
    (parent,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                   "tags.`mlproject.role` = 'sweep_parent'")
    children = children_of(parent.info.run_id)
    assert len(children) == 4
    for child in children:
        assert child.data.metrics["eval/pydocs/bpb"] > 0 and "eval/pydocs/bpb_ci95_low" in child.data.metrics
        assert "mlproject.eval.checkpoint_sha256" in child.data.tags
    for group in ("gpt2", "gpt3"):
        assert parent.data.metrics[f"eval_pydocs_bpb/{group}/n"] == 2
        assert parent.data.metrics[f"val_bpb_best/{group}/n"] == 2
    assert "eval_pydocs_bpb/gpt3-gpt2/p_value" in parent.data.metrics


def test_unknown_eval_dataset_is_a_one_line_error_before_any_run(research_env, tmp_path, capsys):
    experiment = unique("compare-eval")
    path = write_sweep(tmp_path / "c.yaml", experiment)
    assert main(["compare", "--config", str(path), "--seeds", "1", "--eval-datasets", "pydocs", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nope'" in err and err.count("mlproject: error") == 1
    assert MlflowClient().get_experiment_by_name(experiment) is None


def test_per_token_eval_metrics_across_datasets_warn(capsys):
    metrics = with_eval_metrics(["val_bpb_best", "eval/pydocs/loss"], ["pydocs", "wikitext2"])
    assert metrics == ["val_bpb_best", "eval/pydocs/loss", "eval/pydocs/bpb", "eval/wikitext2/bpb"]
    assert "not comparable across corpora" in capsys.readouterr().err


def test_plot_draws_val_bpb_best_from_the_tracking_store(compare_sweep, research_env, tmp_path):
    from mlproject.research.config import PlotConfig
    from mlproject.research.plots import run_plot

    outcome, printed = compare_sweep
    written = run_plot(PlotConfig(parent_run_id=outcome.parent_run_id, kind="compare", metric="val_bpb_best",
                                  log_to_run=False, output_dir=str(tmp_path)))
    assert [p.name for p in written if p.suffix == ".png"] == ["compare_val_bpb_best.png"]
    summary = (tmp_path / "compare_val_bpb_best_summary.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in summary[1:]] == ["gpt2", "gpt3"]
