"""The results table: rows, files, aggregation, and the names of the parent's metrics."""

from __future__ import annotations

import pytest

from mlproject.errors import MlprojectError
from mlproject.research.results import (aggregate, format_summary, make_row, read_results, stats_to_metrics,
                                        write_results)


def _rows():
    losses = {("gpt2", 42): 3.0, ("gpt3", 42): 2.9, ("gpt2", 43): 3.2, ("gpt3", 43): 3.0}
    rows = [make_row(run_id=f"r{i}", status="FINISHED", group=g, model_version=g, seed=s,
                     summary={"val_loss_best": v, "params_total": 1000 if g == "gpt2" else 1200},
                     checkpoint_uris={"last": f"runs:/r{i}/checkpoints/last.pt"})
            for i, ((g, s), v) in enumerate(losses.items())]
    rows.append(make_row(run_id="rx", status="FAILED", group="gpt3", model_version="gpt3", seed=44,
                         summary={"val_loss_best": 99.0}))
    return rows


def test_aggregate_ignores_unfinished_children():
    stats = aggregate(_rows(), ["gpt2", "gpt3"], ["val_loss_best"])
    assert stats.summaries["val_loss_best"]["gpt3"].n == 2
    assert stats.summaries["val_loss_best"]["gpt3"].mean == pytest.approx(2.95)


def test_aggregate_pairs_each_group_with_the_first():
    stats = aggregate(_rows(), ["gpt2", "gpt3"], ["val_loss_best"])
    paired = stats.paired["val_loss_best"]
    assert list(paired) == ["gpt3"]
    assert paired["gpt3"].mean_diff == pytest.approx(((2.9 - 3.0) + (3.0 - 3.2)) / 2)


def test_parent_metric_names_are_metric_group_stat():
    metrics = stats_to_metrics(aggregate(_rows(), ["gpt2", "gpt3"], ["val_loss_best"]))
    assert metrics["val_loss_best/gpt2/mean"] == pytest.approx(3.1)
    assert metrics["val_loss_best/gpt2/n"] == 2
    assert {"val_loss_best/gpt3/ci95_low", "val_loss_best/gpt3/ci95_high", "val_loss_best/gpt3/std",
            "val_loss_best/gpt3-gpt2/mean_diff", "val_loss_best/gpt3-gpt2/p_value"} <= set(metrics)


def test_results_roundtrip_through_jsonl_and_csv(tmp_path):
    rows = _rows()
    jsonl, csv = write_results(rows, tmp_path)
    for path in (jsonl, csv):
        back = read_results(path)
        assert [(r["run_id"], r["group"], r["seed"], r["val_loss_best"]) for r in back] == \
               [(r["run_id"], r["group"], r["seed"], r["val_loss_best"]) for r in rows]
        assert back[0]["checkpoint_last"] == "runs:/r0/checkpoints/last.pt"


def test_read_results_rejects_a_file_without_result_columns(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(MlprojectError, match="missing column"):
        read_results(path)


def test_summary_table_lists_groups_with_paired_difference():
    text = format_summary(aggregate(_rows(), ["gpt2", "gpt3"], ["val_loss_best"]), _rows())
    gpt3_line = next(line for line in text.splitlines() if line.strip().startswith("gpt3"))
    assert "2.9500" in gpt3_line and "-0.1500" in gpt3_line
    assert "gpt2 0.00M" in text or "parameters: gpt2" in text
