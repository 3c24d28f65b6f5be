"""`mlproject plot`: charts of a compare or ablation, read from the tracking store.

The numbers come from the parent run's children (their summary metrics and metric
histories), found by parent run id or as the newest parent of an experiment, so no local file
is needed; `--results` reads a `results.jsonl`/`.csv` instead (offline, no curves). Charts:

- compare / ablation: dot-and-interval chart of a summary metric: every seed as a dot, the
  group mean with its 95% t-CI as an interval (no bars), the paired difference to the baseline
  under each label, the ablation's axis in the title;
- curves: train and validation loss against tokens seen, mean across seeds with a +-1 std band,
  and each `--target` of the sweep as a horizontal line with each group's crossing marked.

PNGs and the summary CSV go to `output_dir` (default: `plots/<experiment>` in the suite's local
folder, `outdir.local_root`) and are logged to the parent run under `plots/`.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlproject.errors import MlprojectError
from mlproject.io import atomic_path, atomic_write_text
from mlproject.outdir import check_writable, in_project_run, local_folder, path_component
from mlproject.research.config import PlotConfig
from mlproject.protocol import process_run_id, result_line
from mlproject.research.results import (Row, SweepStats, aggregate, original_summary_rows, read_results,
                                        summary_table_rows, to_csv)
from mlproject.schema import Artifact, RunRole, RunStatus, Tag

CURVE_METRICS = ("train_loss", "val_loss")
PLOTS_DIR = "plots"  # under the local folder: plots/<experiment>/ when no output_dir is given


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in containers
    import matplotlib.pyplot as plt

    return plt


def order_groups(groups: Sequence[str], kind: str) -> list[str]:
    """Ablation values in numeric order when they are all numbers; otherwise as given."""
    if kind != "ablation":
        return list(groups)
    try:
        return sorted(groups, key=float)
    except ValueError:
        return list(groups)


# ----------------------------------------------------------------------------- charts

def bar_chart(rows: Sequence[Row], stats: SweepStats, metric: str, path: Path, *, title: str,
              groups: Sequence[str]) -> Path:
    """`interval_figure` saved to `path` (the name is kept: the chart once had bars)."""
    plt = _pyplot()
    return _save(interval_figure(rows, stats, metric, title=title, groups=groups), plt, path)


def interval_figure(rows: Sequence[Row], stats: SweepStats, metric: str, *, title: str,
                    groups: Sequence[str]) -> Any:
    """Dot-and-interval chart: each seed as a dot, the group mean with its 95% t-CI as an
    interval, paired differences to the baseline in the labels.

    No bars: a bar of a loss would have to start at 0 to be honest, and then differences of
    0.01 next to a loss of 8 vanish; dots and intervals can zoom to the data without
    suggesting a length that means something."""
    plt = _pyplot()
    summaries = stats.summaries.get(metric, {})
    paired = stats.paired.get(metric, {})
    groups = [g for g in groups if g in summaries]
    if not groups:
        raise MlprojectError(f"no finished child run has the metric {metric!r}")
    x = np.arange(len(groups))
    means = np.array([summaries[g].mean for g in groups])
    low = np.array([summaries[g].ci_low if summaries[g].ci_low is not None else summaries[g].mean for g in groups])
    high = np.array([summaries[g].ci_high if summaries[g].ci_high is not None else summaries[g].mean for g in groups])

    fig, ax = plt.subplots(figsize=(max(5.5, 1.4 * len(groups) + 2), 4.8))
    rng = np.random.default_rng(0)  # fixed jitter: the same data gives the same picture
    for i, group in enumerate(groups):
        values = _seed_values(rows, group, metric)
        ax.scatter(i - 0.15 + rng.uniform(-0.06, 0.06, len(values)), values, color="#de2d26", s=22, zorder=3,
                   alpha=0.8, label="seed" if i == 0 else None)
    ax.errorbar(x + 0.1, means, yerr=[means - low, high - means], fmt="o", color="black", markersize=6,
                capsize=6, label="mean, 95% CI (t)", zorder=4)
    ax.set_xticks(x, [_group_label(g, summaries, paired) for g in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    # Outside the data area, right of the axes: a legend inside covered a CI whisker.
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _seed_values(rows: Sequence[Row], group: str, metric: str) -> list[float]:
    return [r[metric] for r in rows if r.get("group") == group
            and r.get("status", RunStatus.FINISHED) == RunStatus.FINISHED
            and isinstance(r.get(metric), (int, float))]


def _group_label(group: str, summaries: dict[str, Any], paired: dict[str, Any]) -> str:
    label = f"{group}\nn={summaries[group].n}"
    if group in paired:
        p = paired[group]
        pv = f", p={p.p_value:.2g}" if p.p_value is not None else ""
        label += f"\nΔ={p.mean_diff:+.4f}{pv}"
    return label


def chart_title(kind: str, metric: str, name: str, axis: str = "") -> str:
    """The title names what varies and what is measured: `ablation of dropout: val_loss_best`."""
    what = f"ablation of {axis}" if kind == "ablation" and axis else kind
    return f"{what}: {metric}\n{name}"


def curves_chart(curves: dict[str, dict[str, list[dict[int, float]]]], tokens: dict[str, list[dict[int, float]]],
                 path: Path, *, title: str, groups: Sequence[str], targets: Sequence[tuple[str, float]] = ()) -> Path:
    """`curves_figure` saved to `path`."""
    plt = _pyplot()
    return _save(curves_figure(curves, tokens, title=title, groups=groups, targets=targets), plt, path)


def curves_figure(curves: dict[str, dict[str, list[dict[int, float]]]], tokens: dict[str, list[dict[int, float]]],
                  *, title: str, groups: Sequence[str], targets: Sequence[tuple[str, float]] = ()) -> Any:
    """Train/val loss vs tokens seen per group: mean across seeds with a +-1 std band, and each
    target (metric, value) on a plotted metric as a horizontal line with each group's crossing.

    `curves[metric][group]` holds one {step: value} per seed; `tokens[group]` the matching
    {step: tokens_seen} per seed (the x axis falls back to steps without it).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVE_METRICS), figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    x_label = "tokens seen"
    for ax, metric in zip(axes, CURVE_METRICS):
        means = []
        for i, group in enumerate(groups):
            seeds = curves.get(metric, {}).get(group, [])
            seeds = [s for s in seeds if s]
            if not seeds:
                continue
            # Seeds of one group share their steps; an early-stopped seed shortens the common range.
            steps = sorted(set.intersection(*(set(s) for s in seeds)))
            if not steps:
                continue
            values = np.array([[s[step] for step in steps] for s in seeds])
            xs = _tokens_at(steps, tokens.get(group, []))
            if xs is None:
                xs, x_label = np.array(steps, dtype=float), "step"
            mean = values.mean(axis=0)
            color = colors[i % len(colors)]
            ax.plot(xs, mean, color=color, label=f"{group} (n={len(seeds)})")
            means.append((group, xs, mean, color))
            if len(seeds) > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        for value in [v for m, v in targets if m == metric]:
            _draw_target(ax, value, means)
        ax.set_title(metric)
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if ax.has_data():  # below the panel, outside the data: a legend inside hid curve ends
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), borderaxespad=0.0, fontsize=8, ncol=2)
    from matplotlib.ticker import EngFormatter

    for ax in axes:
        ax.set_xlabel(x_label)
        ax.xaxis.set_major_formatter(EngFormatter())  # 150k, not 150000
    fig.suptitle(f"{title}: mean across seeds, band ±1 std")
    return fig


def _draw_target(ax: Any, target: float, means: Sequence[tuple[str, np.ndarray, np.ndarray, str]]) -> None:
    """A target as a dashed horizontal line, and an x where each group's mean curve first reaches
    it (interpolated, as time-to-target does per seed); a group that never does gets no mark."""
    from mlproject.research.time_to_target import CurvePoint, time_to_target

    ax.axhline(target, color="0.3", linestyle="--", linewidth=1, label=f"target {target:g}")
    for group, xs, mean, color in means:
        crossing = time_to_target([CurvePoint(tokens=float(x), seconds=0.0, flops=0.0, value=float(v))
                                   for x, v in zip(xs, mean)], target)  # the plotted curves are losses
        if crossing.reached:
            ax.plot([crossing.tokens], [target], marker="x", markersize=9, color=color, linestyle="none",
                    label=f"{group} reaches {target:g}")


def _tokens_at(steps: Sequence[int], per_seed: Sequence[dict[int, float]]) -> np.ndarray | None:
    """Tokens seen at `steps` (the seeds' mean), interpolated between logged steps."""
    known = [s for s in per_seed if s]
    if not known:
        return None
    columns = [np.interp(steps, sorted(s), [s[k] for k in sorted(s)]) for s in known]
    return np.mean(columns, axis=0)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    """Save atomically: a temp file in the same folder, then rename. `bbox_inches="tight"` grows
    the picture to hold everything drawn, so labels and the outside legends are never cut."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------- sources

@dataclass
class _Source:
    """Rows, groups and kind of one sweep, from the tracking store or a results file."""

    rows: list[Row]
    groups: list[str]
    kind: str                       # compare | ablation
    name: str                       # for titles
    folder: str                     # the default output folder's name: the experiment's, or the results file's folder
    parent_run_id: str | None = None
    children: list[Any] = field(default_factory=list)  # child RunRecords (store only: curves)


def _from_file(paths: Sequence[str]) -> _Source:
    """The rows of one or more results files, pooled (the original's `--results a.jsonl b.jsonl`)."""
    rows = [row for path in paths for row in read_results(path)]
    if not rows:
        raise MlprojectError(f"{', '.join(paths)}: no rows")
    groups = list(dict.fromkeys(str(r["group"]) for r in rows))
    kind = "ablation" if any(r.get("axis") for r in rows) else "compare"
    return _Source(rows, groups, kind, ", ".join(Path(p).name for p in paths), Path(paths[0]).resolve().parent.name)


def _from_store(cfg: PlotConfig, metric: str) -> _Source:
    from mlproject.research.sweep import row_from_run
    from mlproject.tracking.queries import experiment_id_by_name, experiment_name, get_run, sweep_cells

    if cfg.parent_run_id:
        parent = get_run(cfg.parent_run_id)
    elif cfg.experiment_name:
        experiment_id = experiment_id_by_name(cfg.experiment_name)
        parent = _newest_with_finished_children(experiment_id) if experiment_id is not None else None
        if parent is None:
            raise MlprojectError(f"experiment {cfg.experiment_name!r} has no compare/ablation parent run "
                                 "with a finished child run")
        print(f"plot: experiment {cfg.experiment_name!r}: parent run {parent.run_id} ({parent.run_name}, "
              f"{parent.status}), the newest with finished child runs", flush=True)
    else:
        raise MlprojectError("plot: give parent_run_id, experiment_name or results (a results.jsonl/csv file)")
    if parent.tags.get(Tag.ROLE) != RunRole.SWEEP_PARENT:
        raise MlprojectError(f"run {parent.run_id} is not a compare/ablation parent run (tag {Tag.ROLE} missing)")
    children = list(sweep_cells(parent, parent.tags.get(Tag.SWEEP_KEY, "")).values())
    if not children:
        raise MlprojectError(f"parent run {parent.run_id} has no child runs")
    rows = [row_from_run(c, [metric]) for c in children]
    groups = json.loads(parent.tags.get(Tag.GROUPS, "[]")) or list(dict.fromkeys(r["group"] for r in rows))
    experiment = experiment_name(parent.experiment_id)
    return _Source(rows, groups, parent.tags.get(Tag.SWEEP_KIND, "compare"), f"{experiment}, run {parent.run_id[:8]}",
                   experiment, parent.run_id, children)


def _newest_with_finished_children(experiment_id: str) -> Any:
    """The newest sweep parent of the experiment that has a FINISHED child (a FAILED or
    interrupted newer parent with nothing to plot is passed over)."""
    from mlproject.tracking.queries import search, sweep_cells

    for parent in search([experiment_id], f"tags.`{Tag.ROLE}` = '{RunRole.SWEEP_PARENT}'"):  # newest first
        cells = sweep_cells(parent, parent.tags.get(Tag.SWEEP_KEY, ""))
        if any(c.status == RunStatus.FINISHED for c in cells.values()):
            return parent
    return None


def _histories(children: Sequence[Any]) -> tuple[dict[str, dict[str, list[dict[int, float]]]],
                                                 dict[str, list[dict[int, float]]]]:
    from mlproject.tracking.queries import metric_history

    curves: dict[str, dict[str, list[dict[int, float]]]] = {m: {} for m in CURVE_METRICS}
    tokens: dict[str, list[dict[int, float]]] = {}
    for child in children:
        if child.status != RunStatus.FINISHED:
            continue
        group = child.tags.get(Tag.GROUP, "")
        for metric in CURVE_METRICS:
            curves[metric].setdefault(group, []).append(dict(metric_history(child.run_id, metric)))
        tokens.setdefault(group, []).append(dict(metric_history(child.run_id, "tokens_seen")))
    return curves, tokens


def _targets(parent_run_id: str | None) -> list[tuple[str, float]]:
    """The sweep's `--target`s (metric, value), from the plan stored on its parent (none without one)."""
    from mlproject.research.config import parse_target
    from mlproject.tracking import client

    text = client.load_text(parent_run_id, Artifact.PLAN_FILE) if parent_run_id else None
    return [parse_target(t) for t in (json.loads(text).get("targets", []) if text else [])]


# ----------------------------------------------------------------------------- the step

def run_plot(cfg: PlotConfig) -> list[Path]:
    """Write the charts and the summary CSV, log them to the parent run, print where they are and
    the MLPROJECT_RESULT line; return the files kept locally.

    Under `mlflow run` the working directory is the project: with no output_dir (and no
    $MLPROJECT_LOCAL_DIR) the files are written to a temporary folder, logged, and removed."""
    scratch = not cfg.output_dir and cfg.log_to_run and in_project_run()
    root, where = local_folder(cfg.output_dir, "output_dir", PLOTS_DIR, cfg.profile)
    if not scratch:
        check_writable(root, where)  # before reading the runs: a bad path costs nothing
    if cfg.kind in ("curves", "ladder") and cfg.results:
        raise MlprojectError(f"plot: kind={cfg.kind} needs the tracking store (--parent-run-id), not a results file")
    source = _from_file(cfg.results) if cfg.results else _from_store(cfg, cfg.metric)
    if cfg.kind in ("compare", "ablation", "ladder") and cfg.kind != source.kind:
        where = ", ".join(cfg.results or []) or f"run {source.parent_run_id}"
        raise MlprojectError(f"plot: kind={cfg.kind} but {where} holds "
                             f"{source.kind} results (groups {', '.join(source.groups)}); use --kind "
                             f"{source.kind} or auto")
    with tempfile.TemporaryDirectory(prefix="mlproject-plots-") if scratch else contextlib.nullcontext() as tmp:
        out = Path(tmp) if tmp else root if cfg.output_dir else root / path_component(source.folder)
        written = [p.resolve() for p in _write(cfg, source, out)]
        logged_to = _log(cfg, source, written)
    places = [f"runs:/{logged_to[0]}/{Artifact.PLOTS}/{p.name}" if tmp else str(p) for p in written]
    for place in places:
        print(f"{'logged' if tmp else 'wrote'} {place}")
    if logged_to:
        print(f"logged to run(s) {', '.join(logged_to)} under plots/")
    # run_id is the plot step's own run under `mlflow run` (the pipeline links it as the step's
    # run); the plotted parent is plotted_run_id.
    print(result_line({"step": "plot", "run_id": process_run_id() or source.parent_run_id,
                       "plotted_run_id": source.parent_run_id, "status": RunStatus.FINISHED,
                       "plots": [p for p in places if p.endswith(".png")], "summary_csv": places[-1]}), flush=True)
    return [] if tmp else written


def _write(cfg: PlotConfig, source: _Source, out: Path) -> list[Path]:
    if source.kind == "ladder":
        from mlproject.research.ladder_plots import ladder_files

        return ladder_files(str(source.parent_run_id), source.children, source.name, out)
    return _sweep_files(cfg, source, out)


def _sweep_files(cfg: PlotConfig, source: _Source, out: Path) -> list[Path]:
    """A compare's or an ablation's charts and summary CSV (the CSV last)."""
    groups = order_groups(source.groups, source.kind)
    written: list[Path] = []
    stats = aggregate(source.rows, source.groups, [cfg.metric])
    axis = next((str(r["axis"]) for r in source.rows if r.get("axis")), "")  # ablations only
    if cfg.kind != "curves":  # compare and ablation share the chart; only the group order differs
        title = cfg.title or chart_title(source.kind, cfg.metric, source.name, axis)
        name = cfg.plot_name or f"{source.kind}_{cfg.metric}.png"
        written.append(bar_chart(source.rows, stats, cfg.metric, out / name, title=title, groups=groups))
    if cfg.kind == "curves" or (cfg.kind == "auto" and source.children):
        curves, tokens = _histories(source.children)
        what = f"ablation of {axis}" if source.kind == "ablation" and axis else source.kind
        title = cfg.title or f"{what} learning curves ({source.name})"
        written.append(curves_chart(curves, tokens, out / f"{source.kind}_curves.png", title=title, groups=groups,
                                    targets=_targets(source.parent_run_id)))
    summary = [row for group in groups for row in summary_table_rows(stats) if row["group"] == group]
    written.append(atomic_write_text(out / f"{source.kind}_{cfg.metric}_summary.csv", to_csv(summary)))
    original_csv = cfg.summary_csv or (str(out / f"summary_{source.kind}_{cfg.metric}.csv")
                                       if cfg.profile == "original" else None)
    if original_csv:
        group_key = "ablation_value" if source.kind == "ablation" else "model_version"
        table = original_summary_rows(source.rows, cfg.metric, group_key)
        written.insert(-1, atomic_write_text(Path(original_csv), to_csv(table)))
    return written


def _log(cfg: PlotConfig, source: _Source, files: Sequence[Path]) -> list[str]:
    """Log the files to the parent run, and to the step's own run under `mlflow run`."""
    step_run = process_run_id()
    targets = list(dict.fromkeys(run for run in (source.parent_run_id, step_run) if run))
    if not cfg.log_to_run or not targets:
        return []
    from mlproject.tracking import client

    for run_id in targets:
        client.log_files(run_id, files, Artifact.PLOTS)
    if step_run and source.parent_run_id and step_run != source.parent_run_id:
        from mlproject.research.describe import plot_note
        from mlproject.tracking.client import describe_run

        client.set_tags(step_run, {Tag.PLOTTED_RUN_ID: source.parent_run_id})
        describe_run(step_run, name=f"plot-{source.kind}-{source.parent_run_id[:8]}",
                     note=plot_note(source.kind, source.name, source.parent_run_id, files))
    return targets
