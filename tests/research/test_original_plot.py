"""plot with the original suite's flags: several `--results` files pooled (its columns or this
suite's), `--plot-name`, `--summary-csv` (group, n, mean, std, min, max); the original profile
writes that CSV under its default name. And the original's columns beside ours in a results row."""

from __future__ import annotations

import csv
import json
import math

import pytest

from mlproject.cli import main
from mlproject.research.results import make_row, with_original_columns, write_results


def _original_rows(model: str, values: dict[int, float]) -> list[dict]:
    """Rows as the original's compare_models.py wrote them (no `group` column)."""
    return [{"run_name": f"{model}_seed{seed}", "model_version": model, "seed": seed, "params_total": 1000,
             "params_trainable": 1000, "train_loss_last": v + 0.1, "train_ppl_last": math.exp(v + 0.1),
             "val_loss_best": v, "val_ppl_best": math.exp(v), "global_steps": 10, "elapsed_sec": 1.0,
             "best_ckpt": "b.pt", "last_ckpt": "l.pt", "history_path": "h.pt", "config_path": "c.json"}
            for seed, v in values.items()]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens: any query would fail
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLPROJECT_PROFILE", raising=False)


def test_several_original_results_files_are_pooled_into_one_chart_and_its_summary_csv(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", _original_rows("gpt2", {42: 5.0, 43: 5.2}))
    b = _jsonl(tmp_path / "b.jsonl", _original_rows("gpt3", {42: 4.8, 43: 5.0}))
    out = tmp_path / "plots"
    assert main(["plot", "--results", a, b, "--kind", "compare", "--metric", "val_loss_best", "--output-dir",
                 str(out), "--plot-name", "fair.png", "--summary-csv", str(tmp_path / "s.csv")]) == 0
    assert (out / "fair.png").stat().st_size > 0 and not (out / "compare_val_loss_best.png").exists()
    rows = _csv_rows(tmp_path / "s.csv")
    assert list(rows[0]) == ["model_version", "group", "n", "mean", "std", "min", "max"]
    # by mean, sample std (the worked values: [4.8, 5.0] -> 4.9 +- 0.1414)
    assert [r["model_version"] for r in rows] == ["gpt3", "gpt2"]
    gpt3 = {k: float(v) for k, v in rows[0].items() if k not in ("model_version", "group")}
    assert gpt3 == pytest.approx({"n": 2, "mean": 4.9, "std": math.sqrt(0.02), "min": 4.8, "max": 5.0})


def test_the_original_profile_writes_its_summary_csv_of_an_ablation_by_default(tmp_path):
    rows = [{**r, "ablation_axis": "norm_type", "ablation_value": norm}
            for norm, vals in (("layernorm", {42: 5.0}), ("rmsnorm", {42: 4.5, 43: 4.7}))
            for r in _original_rows("gpt3", vals)]
    out = tmp_path / "plots"
    assert main(["plot", "--profile", "original", "--results", _jsonl(tmp_path / "r.jsonl", rows),
                 "--output-dir", str(out)]) == 0
    summary = _csv_rows(out / "summary_ablation_val_loss_best.csv")
    assert [(r["ablation_value"], r["n"]) for r in summary] == [("rmsnorm", "2"), ("layernorm", "1")]
    assert [float(r["std"]) for r in summary] == [pytest.approx(math.sqrt(0.02)), 0.0]
    assert (out / "ablation_val_loss_best.png").is_file()


def test_this_suites_results_and_the_originals_pool_together(tmp_path):
    ours, _ = write_results([make_row(run_id="r1", status="FINISHED", group="gpt2", model_version="gpt2", seed=1,
                                      summary={"val_loss_best": 6.0})], tmp_path)
    theirs = _jsonl(tmp_path / "o.jsonl", _original_rows("gpt3", {1: 4.0}))
    assert main(["plot", "--results", str(ours), theirs, "--output-dir", str(tmp_path / "p"),
                 "--summary-csv", str(tmp_path / "s.csv")]) == 0
    assert {r["model_version"]: r["mean"] for r in _csv_rows(tmp_path / "s.csv")} == {"gpt2": "6.0", "gpt3": "4.0"}


def test_a_row_gets_the_original_columns_beside_its_own():
    row = make_row(run_id="abc", status="FINISHED", group="rmsnorm", model_version="gpt3", seed=43,
                   summary={"val_loss_best": 5.0, "train_loss_last": 2.0, "params_total": 1234},
                   checkpoint_uris={"last": "runs:/abc/checkpoints/last.pt", "best": "runs:/abc/checkpoints/best.pt"},
                   axis="norm_type", value="rmsnorm")
    out = with_original_columns(row, global_steps=12)
    assert {k: out[k] for k in row} == row  # this suite's columns as they were
    assert out["global_steps"] == 12
    assert out["run_name"] == "norm_type_rmsnorm_seed43" and out["params_trainable"] == 1234
    assert out["train_ppl_last"] == pytest.approx(math.exp(2.0))
    assert (out["ablation_axis"], out["ablation_value"]) == ("norm_type", "rmsnorm")
    assert (out["best_ckpt"], out["last_ckpt"]) == ("runs:/abc/checkpoints/best.pt", "runs:/abc/checkpoints/last.pt")
