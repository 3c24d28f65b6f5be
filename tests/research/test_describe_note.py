"""The sweep parent's description (`mlflow.note.content`) as MLflow's run page renders it: a
narrow table whose columns stay apart, numbers at the precision the seeds carry, and every
figure of the comparison kept in lines below the table."""

from __future__ import annotations

import re

from mlproject.research.describe import best_row, pipeline_note, summary_markdown
from mlproject.research.results import aggregate

LOSSES = {"gpt2": [8.2834, 8.3012, 8.2911], "gpt3": [8.2712, 8.2798, 8.2750], "gpt3-swiglu": [8.3101, 8.2999, 8.3050]}


def _rows(groups=LOSSES):
    return [{"run_id": f"{group}-{i}", "status": "FINISHED", "group": group, "seed": 42 + i,
             "val_loss_best": loss, "tokens_per_sec": 12345.6 + 100 * i}
            for group, losses in groups.items() for i, loss in enumerate(losses)]


def _note(groups=LOSSES):
    rows = _rows(groups)
    stats = aggregate(rows, list(groups), ["val_loss_best", "tokens_per_sec"])
    return stats, summary_markdown("compare", stats, rows, best_row(rows, "val_loss_best"))


def _table(note: str, metric: str) -> list[list[str]]:
    """The cells of `metric`'s table, the column gaps removed."""
    block = note.split(f"#### {metric}\n\n", 1)[1].split("\n\n", 1)[0]
    return [[c.strip().removesuffix("&emsp;") for c in line.strip("|").split("|")] for line in block.splitlines()]


def test_the_table_has_seven_short_columns():
    _, note = _note()
    header, align, *body = _table(note, "val_loss_best")
    assert header == ["group", "n", "mean ± sd", "95% CI", "Δ", "p (Holm)", "sig"]
    assert len(body) == 3 and all(len(row) == 7 for row in body)
    assert max(len(cell) for row in body for cell in row) <= 18  # no cell widens the narrow box


def test_every_cell_but_the_last_ends_in_a_gap_mlflow_cannot_trim():
    _, note = _note()
    rows = [line for line in note.splitlines() if line.startswith("| ") and not line.startswith("| :--")]
    assert rows and all(line.count("&emsp; |") == line.count("|") - 2 for line in rows)


def test_numbers_carry_the_precision_of_the_seed_spread():
    _, note = _note()
    gpt3 = _table(note, "val_loss_best")[3]
    assert gpt3[:5] == ["gpt3", "3", "8.2753 ± 0.0043", "[8.2646, 8.2860]", "-0.0166"]
    throughput = _table(note, "tokens_per_sec")[2]
    assert throughput[2:4] == ["12,446 ± 100", "[12,197, 12,694]"]  # grouped, never 1.245e+04


def test_the_comparison_in_full_is_kept_below_the_table():
    stats, note = _note()
    paired, holm = stats.paired["val_loss_best"]["gpt3"], stats.adjusted["val_loss_best"]["gpt3"]
    line = next(line for line in note.splitlines() if line.startswith("- gpt3 − gpt2:"))
    assert f"95% CI [{paired.ci_low:+.4f}, {paired.ci_high:+.4f}]" in line
    assert f"p {paired.p_value:.3g}" in line and f"Holm-adjusted p {holm.p_holm:.3g}" in line
    assert "sig: Holm-adjusted p ≤ α = 0.05" in note and "Power (80%, two-sided paired t):" in note
    assert re.search(r"Best child by val_loss_best: gpt3 seed 42 \(val_loss_best 8\.2712", note)


def test_two_groups_report_the_plain_p_value():
    _, note = _note({k: LOSSES[k] for k in ("gpt2", "gpt3")})
    assert _table(note, "val_loss_best")[0][5] == "p" and "Holm" not in note


def test_the_pipeline_table_keeps_its_columns_apart_too():
    note = pipeline_note("p", "succeeded", [{"id": "train", "entry_point": "train", "status": "succeeded",
                                             "run_id": "abc", "duration_sec": 3.5}])
    assert "| train&emsp; | train&emsp; | succeeded&emsp; | `abc`&emsp; | 3.5 |" in note
