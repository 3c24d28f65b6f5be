"""What runs say about themselves: a sweep parent's params, description and best child; the
descriptions of the pipeline and plot runs.

- `parent_params`: the params every child shares (from the children's resolved configs),
  plus the job's own settings (`compare.models`, `compare.seeds`, `ablation.axis`, ...), which
  name the varied axis and its values. Never one child's seed or model version: a search
  such as `params.model.model_version='gpt2' and params.train.seed='42'` finds children only.
- `summary_markdown`: the summary table as Markdown, the parent's description in the UI.
- `best_row`: the child that is best by the sweep's first metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlproject.app.config import RunConfig
from mlproject.research.results import Row, SweepStats
from mlproject.schema import RunStatus

if TYPE_CHECKING:
    from mlproject.research.decisions import AliasDecision

# The seed fields always vary with the sweep (`<kind>.seeds` lists them); model.vocab_size is the
# model default until the tokenizer fixes it per child, so the data section's value stands for it.
_NEVER_SHARED = {"train.seed", "train.data_seed", "model.vocab_size"}
_HIGHER_IS_BETTER = ("tokens_per_sec", "mfu", "accuracy", "acc")


def child_params(cfg: RunConfig) -> dict[str, Any]:
    """The params of one child config (`RunConfig.params`), resolved as its trainer resolves them
    (preset sizes, the recipe's optimizer settings)."""
    from mlproject.training.optim import resolve_recipe

    return cfg.replace(model=cfg.model.resolved(), train=resolve_recipe(cfg.train, cfg.model.model_version)).params()


def parent_params(spec: Any) -> dict[str, Any]:
    """Params shared by every child, plus the job's settings (the keys outside model/data/train)."""
    per_child = [child_params(child.cfg) for child in spec.children]
    shared: dict[str, Any] = {}
    if per_child:
        first = per_child[0]
        shared = {k: v for k, v in first.items()
                  if k not in _NEVER_SHARED and all(k in p and p[k] == v for p in per_child[1:])}
    job = {k: v for k, v in spec.params.items() if k.split(".", 1)[0] not in ("model", "data", "train")}
    return {**shared, **job}


def lower_is_better(metric: str) -> bool:
    """Losses, perplexities and bits per byte go down; throughput and accuracies go up."""
    return not any(word in metric for word in _HIGHER_IS_BETTER)


def best_row(rows: Sequence[Row], metric: str) -> Row | None:
    """The FINISHED child with the best value of `metric` (None if no child has one)."""
    scored = [r for r in rows if r.get("status") == RunStatus.FINISHED and isinstance(r.get(metric), (int, float))
              and not math.isnan(r[metric])]
    if not scored:
        return None
    sign = 1.0 if lower_is_better(metric) else -1.0
    return min(scored, key=lambda r: sign * float(r[metric]))


def _num(x: float | None, sig: int = 3, sign: str = "") -> str:
    """`x` in `sig` significant digits ("–": none): p-values and the detail lines."""
    return "–" if x is None or math.isnan(x) else format(x, f"{sign}.{sig}g")


def _decimals(stats: SweepStats, metric: str) -> int:
    """Decimals that give the smallest seed-to-seed spread of `metric` two significant digits: the
    precision its numbers carry (4 when no group has a spread)."""
    spreads = [s.std for s in stats.summaries.get(metric, {}).values() if s.std and s.std > 0]
    if not spreads:
        return 4
    return min(6, max(0, 1 - math.floor(math.log10(min(spreads)))))


def _fixed(x: float | None, decimals: int, sign: str = "") -> str:
    """`x` at `decimals`, thousands grouped (`12,446`), never in exponent form ("–": none)."""
    return "–" if x is None or math.isnan(x) else format(x, f"{sign},.{decimals}f")


def _ci(low: float | None, high: float | None, decimals: int, sign: str = "") -> str:
    return "–" if low is None or high is None else f"[{_fixed(low, decimals, sign)}, {_fixed(high, decimals, sign)}]"


# MLflow's run page draws a description's table with no cell padding: neighbouring cells touch
# ("3 8.2919 0.0089[8.2697, 8.3141]"). An em space after each cell but the last keeps the columns
# apart; an entity, since Markdown trims a cell's plain (and Unicode) whitespace.
_GAP = "&emsp;"


def _table_row(cells: Sequence[Any]) -> str:
    """One Markdown table row whose columns stay apart in MLflow's UI."""
    *inner, last = [str(c) for c in cells]
    return "| " + "".join(f"{c}{_GAP} | " for c in inner) + f"{last} |"


def _metric_table(stats: SweepStats, metric: str) -> list[str]:
    """One metric's table: few short columns (MLflow's description box is narrow), a line per group."""
    d = _decimals(stats, metric)
    lines = [_table_row(["group", "n", "mean ± sd", "95% CI", "Δ", "p (Holm)" if stats.corrected else "p", "sig"]),
             "| :-- | --: | --: | --: | --: | --: | :-: |"]
    for group in stats.groups:
        s = stats.summaries.get(metric, {}).get(group)
        if s is None:
            lines.append(_table_row([group, 0, "–", "–", "–", "–", "–"]))
            continue
        p = stats.paired.get(metric, {}).get(group)
        adjusted = stats.adjusted.get(metric, {}).get(group)
        p_value = (adjusted.p_holm if adjusted else None) if stats.corrected else (p.p_value if p else None)
        diff = _fixed(p.mean_diff, d, "+") if p else ("base" if group == stats.baseline else "–")
        sig = ("yes" if stats.significant(metric, group) else "no") if p else "–"
        lines.append(_table_row([group, s.n, f"{_fixed(s.mean, d)} ± {_fixed(s.std, d)}", _ci(s.ci_low, s.ci_high, d),
                                diff, _num(p_value), sig]))
    return lines


def _metric_details(stats: SweepStats, metric: str) -> list[str]:
    """Below the table: what its columns mean, each comparison in full, the power of each."""
    rule, d = ("Holm-adjusted p" if stats.corrected else "p"), _decimals(stats, metric)
    lines = [f"Δ: mean paired difference from the baseline {stats.baseline} (same seeds); "
             f"sig: {rule} ≤ α = {stats.alpha:g}.", ""]
    for group, p in stats.paired.get(metric, {}).items():
        adjusted = stats.adjusted.get(metric, {}).get(group)
        holm = f", Holm-adjusted p {_num(adjusted.p_holm)}" if stats.corrected and adjusted else ""
        lines.append(f"- {group} − {stats.baseline}: {_fixed(p.mean_diff, d, '+')}, "
                     f"95% CI {_ci(p.ci_low, p.ci_high, d, '+')}, p {_num(p.p_value)}{holm}")
    if stats.paired.get(metric):
        lines += ["", "Power (80%, two-sided paired t):", ""]
        lines += [f"- {line}" for line in stats.power_lines(metric)]
    return lines + [""]


def summary_markdown(kind: str, stats: SweepStats, rows: Sequence[Row], best: Row | None = None,
                     model_uri: str | None = None, alias: str | None = None) -> str:
    """The parent's description: per metric a compact Markdown table (n, mean ± sd, 95% CI, the
    paired difference against the baseline, its p (Holm-adjusted for a family of candidates) and
    whether it is significant), the full comparisons and their power as lines below it, then the
    best model and, with `alias`, why `best` went where."""
    finished = sum(r.get("status") == RunStatus.FINISHED for r in rows)
    seeds = sorted({int(r["seed"]) for r in rows})
    lines = [f"**{kind}** of {', '.join(stats.groups)} over seeds {', '.join(map(str, seeds))} "
             f"({finished}/{len(rows)} children finished; baseline {stats.baseline}).", ""]
    for metric in stats.metrics:
        lines += [f"#### {metric}", "", *_metric_table(stats, metric), "", *_metric_details(stats, metric)]
    if best is not None and stats.metrics:
        metric = stats.metrics[0]
        lines.append(f"Best child by {metric}: {best['group']} seed {best['seed']} "
                     f"({metric} {best[metric]:.4f}, run `{best['run_id']}`)"
                     + (f", model `{model_uri}`." if model_uri and alias is None else "."))
    if alias is not None:
        lines.append("")
        lines.append(f"Alias `best`: {alias}" + (f" (model `{model_uri}`)." if model_uri else "."))
    return "\n".join(lines)


def gate_alias(stats: SweepStats, rows: Sequence[Row], metric: str) -> AliasDecision:
    """Where the gated `best` alias goes: the best child of the best group that beats the
    baseline at the Holm-adjusted alpha in the metric's direction, else the baseline's best child."""
    from mlproject.research.decisions import GroupResult, gate_best

    groups = []
    for group in stats.groups:
        summary = stats.summaries.get(metric, {}).get(group)
        best = best_row([r for r in rows if r.get("group") == group], metric)
        groups.append(GroupResult(group=group, mean=summary.mean if summary else math.nan,
                                  best_run_id=best["run_id"] if best else None,
                                  vs_baseline=stats.paired.get(metric, {}).get(group)))
    p_holm = {g: a.p_holm for g, a in stats.adjusted.get(metric, {}).items()}
    direction = "minimize" if lower_is_better(metric) else "maximize"
    return gate_best(groups, direction, p_holm, alpha=stats.alpha, metric=metric)


def finish_parent(spec: Any, parent_run_id: str, rows: Sequence[Row], stats: SweepStats,
                  notes: Sequence[str] = ()) -> dict[str, str]:
    """After the sweep: the best child's model logged (and registered with `register_best`,
    gated by the evidence unless `register_best_ungated`), the parent's description written.
    Returns the fields this adds to the MLPROJECT_RESULT line."""
    from mlproject.errors import MlprojectError
    from mlproject.schema import AliasOutcome, Tag, evidence_tag
    from mlproject.tracking.best_model import predict_command, publish_best
    from mlproject.tracking.client import describe_run, set_tags

    metric = spec.metrics[0]
    best = chosen = best_row(rows, metric)
    decision, alias = None, None
    if spec.register_best:
        if spec.register_best_ungated:
            alias = f"the lowest {metric} child, ungated (--register-best-ungated)"
            outcome = AliasOutcome.UNGATED
        else:  # the alias moves only on evidence: noise must not reach the registry
            decision = gate_alias(stats, rows, metric)
            chosen = next((r for r in rows if r["run_id"] == decision.run_id), None)
            alias = decision.reason
            outcome = AliasOutcome.MOVED if decision.moved else AliasOutcome.STAYED
        set_tags(parent_run_id, {Tag.BEST_ALIAS_DECISION: outcome, Tag.BEST_ALIAS_REASON: alias})
        print(f"alias best: {alias}")
    published = None
    if chosen is not None:
        evidence = {evidence_tag(k): v for k, v in decision.evidence.items()} if decision else None
        try:
            published = publish_best(parent_run_id, chosen["run_id"], spec.register_best, metric=metric,
                                     value=float(chosen[metric]), version_tags=evidence)
        except Exception as exc:  # MLflow errors too: one line, the sweep's results are kept
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MlprojectError(f"{spec.kind}: the best child's model could not be logged or registered: "
                                 f"{first}") from None
    describe_run(parent_run_id, name=spec.run_name,
                 note=summary_markdown(spec.kind, stats, rows, best,
                                       published and (published.alias_uri or published.model_uri), alias)
                 + "".join(f"\n\n{line}" for line in notes))
    if published is None:
        return {"best_alias": alias} if alias else {}
    print(f"best model: {chosen['group']} seed {chosen['seed']} ({metric} {chosen[metric]:.4f}), "
          f"run {chosen['run_id']}: {published.model_uri}")
    fields = {"model_uri": published.model_uri, **({"best_alias": alias} if alias else {})}
    if published.alias_uri:
        print(f"registered: {published.registered_uri} (alias {published.alias_uri})")
        print(f"predict: {predict_command(published.alias_uri)}")
        fields.update(model_uri=published.alias_uri, registered_model_uri=published.registered_uri)
    return fields


def plot_note(kind: str, name: str, parent_run_id: str, files: Sequence[Any]) -> str:
    """The plot run's description: what it plotted and the files it logged under plots/."""
    from pathlib import Path

    lines = [f"Charts of the {kind} parent run `{parent_run_id}` ({name}), logged under `plots/` here "
             "and on that run:", ""]
    lines += [f"- `plots/{Path(f).name}`" for f in files]
    return "\n".join(lines)


def pipeline_note(name: str, status: str, steps: Sequence[dict[str, Any]]) -> str:
    """The pipeline run's description: one Markdown row per step with its status and run id."""
    lines = [f"Pipeline **{name}**: {status}.", "", _table_row(["step", "entry point", "status", "run", "seconds"]),
             "| --- | --- | --- | --- | ---: |"]
    for s in steps:
        run = f"`{s['run_id']}`" if s.get("run_id") else "–"
        seconds = s.get("duration_sec")
        lines.append(_table_row([s["id"], s.get("entry_point", ""), s["status"], run, "" if seconds is None else seconds]))
    model = next((r.get("model_uri") for r in ((s.get("result") or {}) for s in steps) if r.get("model_uri")), None)
    if model:
        lines += ["", f"Best model: `{model}`."]
    return "\n".join(lines)
