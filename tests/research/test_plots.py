"""`plot`: charts from the tracking store alone, or offline from a results file."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from mlproject.errors import MlprojectError
from mlproject.research.config import PlotConfig
from mlproject.research.plots import order_groups, run_plot
from mlproject.research.results import make_row, write_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_reads_the_tracking_store_and_logs_pngs_to_the_parent(compare_sweep, research_env, tmp_path, capsys):
    outcome, _ = compare_sweep
    written = run_plot(PlotConfig(parent_run_id=outcome.parent_run_id, output_dir=str(tmp_path / "plots")))
    names = sorted(p.name for p in written)
    assert names == ["compare_curves.png", "compare_val_loss_best.png", "compare_val_loss_best_summary.csv"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in written if p.suffix == ".png")
    logged = {f.path for f in MlflowClient().list_artifacts(outcome.parent_run_id, "plots")}
    assert {"plots/compare_curves.png", "plots/compare_val_loss_best.png"} <= logged
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1].split(" ", 1)[1])
    assert result["run_id"] == outcome.parent_run_id and len(result["plots"]) == 2


def test_a_plot_step_under_mlflow_run_reports_and_names_its_own_run(compare_sweep, research_env, tmp_path, capsys,
                                                                     monkeypatch):
    outcome, _ = compare_sweep
    step_run = MlflowClient().create_run(outcome.experiment_id).info.run_id  # as `mlflow run -e plot` would
    monkeypatch.setenv("MLFLOW_RUN_ID", step_run)
    run_plot(PlotConfig(parent_run_id=outcome.parent_run_id, output_dir=str(tmp_path / "plots")))
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1].split(" ", 1)[1])
    assert result["run_id"] == step_run and result["plotted_run_id"] == outcome.parent_run_id
    run = MlflowClient().get_run(step_run)
    assert run.info.run_name == f"plot-compare-{outcome.parent_run_id[:8]}"
    assert outcome.parent_run_id in run.data.tags["mlflow.note.content"]


def test_plot_by_experiment_name_uses_its_latest_parent(compare_sweep, research_env, tmp_path):
    outcome, _ = compare_sweep
    written = run_plot(PlotConfig(experiment_name=outcome.experiment_name, kind="compare", log_to_run=False,
                                  output_dir=str(tmp_path)))
    summary = (tmp_path / "compare_val_loss_best_summary.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in summary[1:]] == ["gpt2", "gpt3"]
    assert [p.name for p in written if p.suffix == ".png"] == ["compare_val_loss_best.png"]


def test_plot_without_output_dir_writes_under_the_local_folder_by_experiment(compare_sweep, research_env, tmp_path,
                                                                              monkeypatch):
    outcome, _ = compare_sweep
    written = run_plot(PlotConfig(parent_run_id=outcome.parent_run_id, kind="compare", log_to_run=False))
    folder = tmp_path / "mlproject-outputs" / "plots" / outcome.experiment_name  # research_env works in tmp_path
    assert {p.parent for p in written} == {folder} and (folder / "compare_val_loss_best.png").is_file()
    monkeypatch.setenv("MLPROJECT_LOCAL_DIR", str(tmp_path / "elsewhere"))
    moved = run_plot(PlotConfig(parent_run_id=outcome.parent_run_id, kind="compare", log_to_run=False))
    assert {p.parent for p in moved} == {tmp_path / "elsewhere" / "plots" / outcome.experiment_name}


def test_plot_under_mlflow_run_without_output_dir_only_logs_its_files(compare_sweep, research_env, tmp_path, capsys,
                                                                        monkeypatch):
    outcome, _ = compare_sweep
    step_run = MlflowClient().create_run(outcome.experiment_id).info.run_id  # as `mlflow run -e plot` would
    monkeypatch.setenv("MLFLOW_RUN_ID", step_run)
    assert run_plot(PlotConfig(parent_run_id=outcome.parent_run_id, kind="compare")) == []
    assert list(tmp_path.iterdir()) == []  # the project (the working directory) stays clean
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1].split(" ", 1)[1])
    assert result["plots"] == [f"runs:/{outcome.parent_run_id}/plots/compare_val_loss_best.png"]
    for run_id in (outcome.parent_run_id, step_run):
        assert "plots/compare_val_loss_best.png" in {f.path for f in MlflowClient().list_artifacts(run_id, "plots")}
    monkeypatch.setenv("MLPROJECT_LOCAL_DIR", str(tmp_path / "local"))  # asked for: written there
    written = run_plot(PlotConfig(parent_run_id=outcome.parent_run_id, kind="compare"))
    assert {p.parent for p in written} == {tmp_path / "local" / "plots" / outcome.experiment_name}


def test_plot_of_a_run_that_is_not_a_sweep_parent_is_an_error(compare_sweep, research_env):
    outcome, _ = compare_sweep
    child = MlflowClient().search_runs([outcome.experiment_id],
                                       f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'")[0]
    with pytest.raises(MlprojectError, match="not a compare/ablation parent run"):
        run_plot(PlotConfig(parent_run_id=child.info.run_id))


def _ablation_rows():
    return [make_row(run_id=f"r{v}{s}", status="FINISHED", group=v, model_version="gpt3", seed=s,
                     summary={"val_loss_best": 3.0 + float(v) + 0.01 * s}, axis="dropout", value=v)
            for s in (1, 2) for v in ("0.2", "0.05", "0.1")]


def test_plot_from_a_results_file_needs_no_tracking_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens: any query would fail
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    jsonl, _ = write_results(_ablation_rows(), tmp_path)
    written = run_plot(PlotConfig(results=[str(jsonl)], output_dir=str(tmp_path / "plots")))
    assert sorted(p.name for p in written) == ["ablation_val_loss_best.png", "ablation_val_loss_best_summary.csv"]
    groups = [line.split(",")[1] for line in written[-1].read_text().splitlines()[1:]]
    assert groups == ["0.05", "0.1", "0.2"]  # numeric order, not file order


def test_curves_need_the_tracking_store(tmp_path):
    jsonl, _ = write_results(_ablation_rows(), tmp_path)
    with pytest.raises(MlprojectError, match="kind=curves needs the tracking store"):
        run_plot(PlotConfig(results=[str(jsonl)], kind="curves", log_to_run=False))


def test_ablation_groups_are_ordered_numerically_only_when_numeric():
    assert order_groups(["4", "2", "16"], "ablation") == ["2", "4", "16"]
    assert order_groups(["rmsnorm", "layernorm"], "ablation") == ["rmsnorm", "layernorm"]
    assert order_groups(["gpt3", "gpt2"], "compare") == ["gpt3", "gpt2"]


def test_a_target_is_a_horizontal_line_on_its_metric_with_each_groups_crossing_marked():
    from mlproject.research.plots import curves_figure

    # val_loss per seed at steps 1..3; tokens_seen = 100 x step. Group a's mean: 6, 5, 4 (crosses
    # 4.5 halfway between steps 2 and 3, at 250 tokens); group b's mean stays at 5 (never crosses).
    curves = {"train_loss": {}, "val_loss": {"a": [{1: 6.5, 2: 5.5, 3: 4.5}, {1: 5.5, 2: 4.5, 3: 3.5}],
                                             "b": [{1: 5.0, 2: 5.0, 3: 5.0}]}}
    tokens = {g: [{1: 100.0, 2: 200.0, 3: 300.0}] * 2 for g in ("a", "b")}
    fig = curves_figure(curves, tokens, title="t", groups=["a", "b"], targets=[("val_loss", 4.5), ("val_ppl", 90.0)])
    train_ax, val_ax = fig.axes
    lines = {line.get_label(): line for line in val_ax.get_lines()}
    assert list(lines["target 4.5"].get_ydata()) == [4.5, 4.5]
    assert list(lines["a reaches 4.5"].get_xdata()) == pytest.approx([250.0])
    assert list(lines["a reaches 4.5"].get_ydata()) == [4.5]
    assert "b reaches 4.5" not in lines  # never reached: no mark
    assert not any(line.get_label().startswith("target") for line in train_ax.get_lines())  # not its metric
    import matplotlib.pyplot as plt

    plt.close(fig)


# ----------------------------------------------------------------------------- honest charts

def _drawn(fig):
    fig.canvas.draw()  # legends and ticks have their final places only once drawn
    return fig.canvas.get_renderer()


def _outside(legend, ax, renderer) -> bool:
    """The legend's box and the axes' data area do not overlap."""
    from matplotlib.transforms import Bbox

    box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    return Bbox.intersection(box, area) is None


def test_the_ablation_chart_is_dots_and_intervals_titled_by_its_axis(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from mlproject.research.plots import chart_title, interval_figure
    from mlproject.research.results import aggregate

    rows = _ablation_rows()
    groups = order_groups(["0.2", "0.05", "0.1"], "ablation")
    stats = aggregate(rows, groups, ["val_loss_best"])
    title = chart_title("ablation", "val_loss_best", "exp, run 12345678", axis="dropout")
    fig = interval_figure(rows, stats, "val_loss_best", title=title, groups=groups)
    (ax,) = fig.axes
    assert not [p for p in ax.patches if isinstance(p, Rectangle)]  # no bars of a loss
    assert "dropout" in ax.get_title() and "val_loss_best" in ax.get_title()
    seeds = [c for c in ax.collections if c.get_label() == "seed"]
    assert len(seeds) == 1 and len(ax.collections[0].get_offsets()) == 2  # each seed of a group is a dot
    assert _outside(ax.get_legend(), ax, _drawn(fig))
    plt.close(fig)


def test_a_saved_chart_keeps_its_outside_legend_and_labels(tmp_path):
    """bbox_inches='tight': the picture grows to hold the legend right of the axes."""
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    from mlproject.research.plots import _save, interval_figure
    from mlproject.research.results import aggregate

    rows = _ablation_rows()
    stats = aggregate(rows, ["0.05", "0.1", "0.2"], ["val_loss_best"])
    fig = interval_figure(rows, stats, "val_loss_best", title="t", groups=["0.05", "0.1", "0.2"])
    width_in = fig.get_figwidth()
    path = _save(fig, plt, tmp_path / "a.png")
    assert mpimg.imread(path).shape[1] > width_in * 120  # wider than the figure: the legend is in


def test_curve_legends_sit_below_their_panels():
    import matplotlib.pyplot as plt

    from mlproject.research.plots import curves_figure

    curves = {"train_loss": {"a": [{1: 6.0, 2: 5.0}]}, "val_loss": {"a": [{1: 6.5, 2: 5.5}]}}
    fig = curves_figure(curves, {}, title="t", groups=["a"])
    renderer = _drawn(fig)
    for ax in fig.axes:
        assert _outside(ax.get_legend(), ax, renderer)
    plt.close(fig)


def test_tune_charts_have_integer_trial_ticks_and_outside_legends():
    optuna = pytest.importorskip("optuna")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from mlproject.research.tune_report import tune_figure

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("train.learning_rate", 1e-4, 1e-2, log=True)
                   + t.suggest_int("train.warmup", 0, 20) * 1e-4, n_trials=5)
    history = tune_figure(study, "optimization_history")
    (ax,) = history.axes
    locator = ax.xaxis.get_major_locator()
    assert isinstance(locator, MaxNLocator) and locator._integer
    renderer = _drawn(history)
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert _outside(ax.get_legend(), ax, renderer)
    importances = tune_figure(study, "param_importances")
    (ax,) = importances.axes
    renderer = _drawn(importances)
    labels = [t for t in ax.get_yticklabels() if t.get_text()]
    assert {t.get_text() for t in labels} == {"train.learning_rate", "train.warmup"}
    figure_box = importances.bbox
    assert all(figure_box.x0 <= t.get_window_extent(renderer).x0 for t in labels)  # not cut at the left edge
    plt.close(history)
    plt.close(importances)
