"""The results table of a sweep: one row per child run, its files, and its statistics.

Compare and ablation write the same table (`results.jsonl`, `results.csv`); the plot step
rebuilds it from the tracking store or reads it back from those files, and every consumer
aggregates it with `aggregate`, so the numbers on the parent run, in the printed summary and
on the charts are computed in one place.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlproject.errors import MlprojectError
from mlproject.io import atomic_write_text
from mlproject.schema import Artifact, RunStatus
from mlproject.research.decisions import AdjustedP, holm
from mlproject.research.power import PairedPower, paired_power, power_line
from mlproject.stats import PairedComparison, Summary, paired_comparison, summarize

# Columns every row has, in file order. `group` is what statistics are grouped by: the model
# version in a compare, the axis value in an ablation (`axis`/`value` are empty in a compare).
ID_COLUMNS = ["run_id", "status", "group", "model_version", "seed", "axis", "value"]
SUMMARY_COLUMNS = ["params_total", "val_loss_best", "val_ppl_best", "val_bpb_best", "train_loss_last", "tokens_seen",
                   "elapsed_sec", "tokens_per_sec", "peak_mem_mb"]
CHECKPOINT_COLUMNS = ["checkpoint_last", "checkpoint_best"]
RESULT_COLUMNS = ID_COLUMNS + SUMMARY_COLUMNS + CHECKPOINT_COLUMNS
_TEXT_COLUMNS = {"run_id", "status", "group", "model_version", "axis", "value", *CHECKPOINT_COLUMNS,
                 # the original suite's text columns (its results files are read too)
                 "run_name", "ablation_axis", "ablation_value", "best_ckpt", "last_ckpt", "history_path",
                 "config_path"}

Row = dict[str, Any]


def make_row(*, run_id: str, status: str, group: str, model_version: str, seed: int,
             summary: Mapping[str, float], checkpoint_uris: Mapping[str, str] | None = None,
             axis: str = "", value: str = "") -> Row:
    """One child's row: identity, its summary metrics (extra ones appended), checkpoint URIs."""
    row: Row = {"run_id": run_id, "status": status, "group": group, "model_version": model_version,
                "seed": int(seed), "axis": axis, "value": value}
    for name in SUMMARY_COLUMNS:
        row[name] = _number(summary.get(name))
    checkpoint_uris = checkpoint_uris or {}
    row["checkpoint_last"] = checkpoint_uris.get("last", "")
    row["checkpoint_best"] = checkpoint_uris.get("best", "")
    for name in sorted(set(summary) - set(SUMMARY_COLUMNS)):
        row[name] = _number(summary[name])
    return row


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    value = float(value)
    return None if math.isnan(value) else value


# ----------------------------------------------------------------------------- files

def _columns(rows: Sequence[Row]) -> list[str]:
    extra = sorted({k for row in rows for k in row} - set(RESULT_COLUMNS))
    return RESULT_COLUMNS + extra


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as CSV text (None as an empty cell); columns default to the keys in first-seen order."""
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


def write_results(rows: Sequence[Row], directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write `results.jsonl` and `results.csv` into `directory` (atomically); return both paths."""
    directory = Path(directory)
    jsonl = "".join(json.dumps(row) + "\n" for row in rows)
    return (atomic_write_text(directory / Artifact.RESULTS_JSONL, jsonl),
            atomic_write_text(directory / Artifact.RESULTS_CSV, to_csv(rows, _columns(rows))))


def read_results(path: str | os.PathLike[str]) -> list[Row]:
    """Rows of a `results.jsonl` or `results.csv` file."""
    path = Path(path)
    if not path.is_file():
        raise MlprojectError(f"results file not found: {path}")
    if path.suffix == ".jsonl":
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise MlprojectError(f"{path}:{lineno}: not a JSON line ({exc.msg})") from None
    elif path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            rows = [_typed(dict(r)) for r in csv.DictReader(f)]
    else:
        raise MlprojectError(f"results file {path} must end in .jsonl or .csv")
    rows = [_from_original_columns(row) for row in rows]
    missing = {"group", "seed"} - set(rows[0]) if rows else set()
    if missing:
        raise MlprojectError(f"{path}: missing column(s) {', '.join(sorted(missing))}; expected a results file")
    return rows


def _from_original_columns(row: Row) -> Row:
    """A row of the original suite's results (`ablation_axis`/`ablation_value`, no `group`) with
    this suite's identity columns added; a row that has them is returned as it is."""
    if "group" in row or "model_version" not in row:
        return row
    out = dict(row)
    value = row.get("ablation_value")
    out["axis"] = str(row.get("ablation_axis") or "")
    out["value"] = "" if value is None else str(value)
    out["group"] = out["value"] if out["axis"] else str(row["model_version"])
    out.setdefault("run_id", str(row.get("run_name", "")))
    out.setdefault("status", RunStatus.FINISHED)
    return out


def _typed(row: dict[str, str]) -> Row:
    out: Row = {}
    for key, text in row.items():
        if key in _TEXT_COLUMNS:
            out[key] = text
        elif key == "seed":
            out[key] = int(text)
        else:
            try:
                out[key] = float(text) if text != "" else None
            except ValueError:
                out[key] = text
    return out


# ----------------------------------------------------------------------------- statistics

@dataclass
class SweepStats:
    """Per-group summaries and paired comparisons against the baseline group, per metric."""

    groups: list[str]
    metrics: list[str]
    summaries: dict[str, dict[str, Summary]] = field(default_factory=dict)            # metric -> group -> Summary
    paired: dict[str, dict[str, PairedComparison]] = field(default_factory=dict)      # metric -> group -> vs baseline
    power: dict[str, dict[str, PairedPower]] = field(default_factory=dict)            # metric -> group -> vs baseline
    adjusted: dict[str, dict[str, AdjustedP]] = field(default_factory=dict)           # metric -> group -> Holm
    alpha: float = 0.05

    @property
    def baseline(self) -> str:
        return self.groups[0]

    @property
    def corrected(self) -> bool:
        """Whether the comparisons form a family (more than one candidate): Holm is then reported."""
        return len(self.groups) > 2

    def significant(self, metric: str, group: str) -> bool:
        """The one reading of "significant" in every output: the Holm-adjusted p-value at alpha."""
        adjusted = self.adjusted.get(metric, {}).get(group)
        return adjusted is not None and adjusted.significant

    def power_lines(self, metric: str) -> list[str]:
        """One plain sentence per comparison against the baseline (`group vs baseline: ...`)."""
        return [f"{g} vs {self.baseline}: {power_line(p, metric)}" for g, p in self.power.get(metric, {}).items()]

    def as_dict(self) -> dict[str, Any]:
        return {
            "groups": self.groups, "baseline": self.baseline, "metrics": self.metrics,
            "summaries": {m: {g: s.as_dict() for g, s in by.items()} for m, by in self.summaries.items()},
            "paired": {m: {g: p.as_dict() for g, p in by.items()} for m, by in self.paired.items()},
            "alpha": self.alpha,
            "power": {m: {g: p.as_dict() for g, p in by.items()} for m, by in self.power.items()},
            "holm": {m: {g: {"p_raw": a.p_raw, "p_holm": a.p_holm, "significant": a.significant}
                         for g, a in by.items()} for m, by in self.adjusted.items()},
        }


def finished(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if r.get("status", RunStatus.FINISHED) == RunStatus.FINISHED]


def aggregate(rows: Sequence[Row], groups: Sequence[str], metrics: Sequence[str], alpha: float = 0.05,
              effect: float | None = None, paired: bool = True) -> SweepStats:
    """Statistics over the FINISHED rows: groups in the given order, the first is the baseline.

    Each comparison against the baseline also gets its power figures (at `alpha`; `effect` is the
    difference the seeds-needed figure refers to, else the observed one) and its Holm-adjusted
    p-value over the family of candidates of that metric. `paired=False`: summaries only.
    """
    out = SweepStats(groups=list(groups), metrics=list(metrics), alpha=alpha)
    done = finished(rows)
    for metric in metrics:
        by_group: dict[str, dict[int, float]] = {g: {} for g in groups}
        for row in done:
            value = row.get(metric)
            if row.get("group") in by_group and isinstance(value, (int, float)) and not math.isnan(value):
                by_group[row["group"]][int(row["seed"])] = float(value)
        out.summaries[metric] = {g: summarize(list(v.values())) for g, v in by_group.items() if v}
        base = by_group.get(groups[0], {}) if groups else {}
        for g in groups[1:] if paired else []:
            comparison = paired_comparison(base, by_group[g])
            if comparison is not None:
                out.paired.setdefault(metric, {})[g] = comparison
                shared = sorted(set(base) & set(by_group[g]))
                out.power.setdefault(metric, {})[g] = paired_power(
                    [by_group[g][s] - base[s] for s in shared], alpha=alpha, effect=effect)
        out.adjusted[metric] = holm({g: p.p_value for g, p in out.paired.get(metric, {}).items()}, alpha)
    return out


def metric_key(name: str) -> str:
    """A group label or metric made safe for an MLflow metric name (`0.1` stays, `a=b` -> `a_b`)."""
    return "".join(c if c.isalnum() or c in "_-. " else "_" for c in name)


def stats_to_metrics(st: SweepStats) -> dict[str, float]:
    """Flat MLflow metrics: `<metric>/<group>/{mean,std,ci95_low,ci95_high,n}` and
    `<metric>/<group>-<baseline>/{mean_diff,ci95_low,ci95_high,p_value,n}`, with the power figures
    `{min_detectable_diff,seeds_needed,effect_size}` and, for a family, `p_holm`."""
    out: dict[str, float] = {}
    for metric, by_group in st.summaries.items():
        for group, s in by_group.items():
            prefix = f"{metric_key(metric)}/{metric_key(group)}"
            out.update(_present({f"{prefix}/mean": s.mean, f"{prefix}/std": s.std,
                                 f"{prefix}/ci95_low": s.ci_low, f"{prefix}/ci95_high": s.ci_high,
                                 f"{prefix}/n": s.n}))
    for metric, by_group in st.paired.items():
        for group, p in by_group.items():
            prefix = f"{metric_key(metric)}/{metric_key(group)}-{metric_key(st.baseline)}"
            out.update(_present({f"{prefix}/mean_diff": p.mean_diff, f"{prefix}/ci95_low": p.ci_low,
                                 f"{prefix}/ci95_high": p.ci_high, f"{prefix}/p_value": p.p_value,
                                 f"{prefix}/n": p.n}))
            pw = st.power.get(metric, {}).get(group)
            if pw is not None:
                out.update(_present({f"{prefix}/min_detectable_diff": pw.min_detectable_diff,
                                     f"{prefix}/seeds_needed": pw.seeds_needed,
                                     f"{prefix}/effect_size": pw.effect_size}))
            adjusted = st.adjusted.get(metric, {}).get(group)
            if st.corrected and adjusted is not None:
                out.update(_present({f"{prefix}/p_holm": adjusted.p_holm}))
    return out


def _present(values: Mapping[str, float | int | None]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None}


def original_summary_rows(rows: Sequence[Row], metric: str, group_key: str) -> list[dict[str, Any]]:
    """The original suite's summary CSV: per group (its column named `group_key`, as the original's
    `model_version` / `ablation_value`, and the same value as `group`, this suite's name for it),
    n, mean, sample std (0 for one value), min, max; by mean."""
    values: dict[str, list[float]] = {}
    for row in rows:
        value = _number(row.get(metric))
        if value is not None:
            values.setdefault(str(row["group"]), []).append(value)
    out = []
    for group, vals in values.items():
        s = summarize(vals)
        out.append({group_key: group, "group": group, "n": s.n, "mean": s.mean, "std": s.std or 0.0, "min": min(vals),
                    "max": max(vals)})
    return sorted(out, key=lambda r: r["mean"])


def summary_table_rows(st: SweepStats) -> list[dict[str, Any]]:
    """One row per metric x group: the summary CSV written next to the plots."""
    rows = []
    for metric, by_group in st.summaries.items():
        for group in st.groups:
            s = by_group.get(group)
            if s is None:
                continue
            p = st.paired.get(metric, {}).get(group)
            rows.append({"metric": metric, "group": group, "n": s.n, "mean": s.mean, "std": s.std,
                         "ci95_low": s.ci_low, "ci95_high": s.ci_high,
                         "diff_vs_baseline": p.mean_diff if p else None,
                         "diff_ci95_low": p.ci_low if p else None, "diff_ci95_high": p.ci_high if p else None,
                         "p_value": p.p_value if p else None,
                         "p_holm": _p_holm(st, metric, group), "significant": st.significant(metric, group)})
    return rows


def _p_holm(st: SweepStats, metric: str, group: str) -> float | None:
    adjusted = st.adjusted.get(metric, {}).get(group)
    return adjusted.p_holm if adjusted is not None else None


def format_summary(st: SweepStats, rows: Sequence[Row] | None = None) -> str:
    """A fixed-width table: per metric and group, mean +- std, 95% CI, n, and the paired test."""

    def num(x: float | None, fmt: str = ".4f") -> str:
        return "-" if x is None else format(x, fmt)

    lines = []
    for metric in st.metrics:
        by_group = st.summaries.get(metric, {})
        lines.append(f"{metric} (95% t CI; paired difference vs {st.baseline} over shared seeds)")
        holm_col = f" {'p_holm':>7}" if st.corrected else ""
        lines.append(f"  {'group':<16} {'n':>3} {'mean':>10} {'std':>9} {'ci95':>21} "
                     f"{'diff':>10} {'diff ci95':>21} {'p':>7}{holm_col}")
        for group in st.groups:
            s = by_group.get(group)
            if s is None:
                lines.append(f"  {group:<16} {0:>3} {'(no finished runs)':>10}")
                continue
            ci = f"[{num(s.ci_low)}, {num(s.ci_high)}]" if s.ci_low is not None else "-"
            p = st.paired.get(metric, {}).get(group)
            diff = num(p.mean_diff, "+.4f") if p else "-"
            dci = f"[{num(p.ci_low, '+.4f')}, {num(p.ci_high, '+.4f')}]" if p and p.ci_low is not None else "-"
            pv = num(p.p_value, ".3g") if p else "-"
            adjusted = st.adjusted.get(metric, {}).get(group)
            ph = f" {num(adjusted.p_holm if adjusted else None, '.3g'):>7}" if st.corrected else ""
            mark = "  significant" if st.significant(metric, group) else ""
            lines.append(f"  {group:<16} {s.n:>3} {s.mean:>10.4f} {num(s.std):>9} {ci:>21} {diff:>10} {dci:>21} "
                         f"{pv:>7}{ph}{mark}")
        lines += [f"  power: {line}" for line in st.power_lines(metric)]
        if st.paired.get(metric):
            rule = "the Holm-adjusted p" if st.corrected else "p"
            lines.append(f"  significant: {rule} <= α = {st.alpha:g}")
    if rows:
        params = {}
        for row in rows:
            if row.get("params_total") is not None:
                params.setdefault(row["group"], int(row["params_total"]))
        if params:
            lines.append("parameters: " + ", ".join(f"{g} {params[g] / 1e6:.2f}M" for g in st.groups if g in params))
    return "\n".join(lines)


def with_original_columns(row: Row, global_steps: int | None = None) -> Row:
    """`row` with the original suite's columns beside this suite's: its run name, parameter and step
    counts, last train perplexity, ablation axis and value, checkpoint locations."""
    axis, value = row.get("axis") or "", row.get("value") or ""
    loss = _number(row.get("train_loss_last"))
    name = f"{axis}_{value}_seed{row['seed']}" if axis else f"{row['model_version']}_seed{row['seed']}"
    return {**row, "run_name": name.replace("/", "_"), "params_trainable": row.get("params_total"),
            "train_ppl_last": math.exp(min(loss, 700.0)) if loss is not None else None,
            "global_steps": global_steps,
            "ablation_axis": axis or None, "ablation_value": value or None,
            "best_ckpt": row.get("checkpoint_best") or None, "last_ckpt": row.get("checkpoint_last") or None}


def export_sweep_results(kind: str, experiment_name: str, rows: Sequence[Row], *,
                         original_steps: Mapping[str, int | None] | None = None) -> Path:
    """Write the sweep's local copy `results.jsonl`/`.csv` at `research_runs/<kind>/<experiment>`
    under the local root (`app.local_copies`); in the original profile (`original_steps`, {run_id:
    steps trained}, given) where the original suite put them, with its columns too. Print and return the folder."""
    from mlproject.app.local_copies import results_dir

    if original_steps is not None:
        rows = [with_original_columns(row, original_steps.get(row["run_id"])) for row in rows]
    folder = results_dir(kind, experiment_name, "original" if original_steps is not None else "default")
    jsonl, _ = write_results(rows, folder)
    print(f"local copy: {jsonl} and results.csv", flush=True)
    return folder
