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

import dataclasses
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
    """The model/data/train params of one child config, resolved as its trainer resolves them
    (preset sizes, the recipe's optimizer settings)."""
    from mlproject.training.optim import resolve_recipe

    return dataclasses.replace(cfg, model=cfg.model.resolved(),
                               train=resolve_recipe(cfg.train, cfg.model.model_version)).flat()


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


def _num(x: float | None, fmt: str = ".4f") -> str:
    return "–" if x is None else format(x, fmt)


def summary_markdown(kind: str, stats: SweepStats, rows: Sequence[Row], best: Row | None = None,
                     model_uri: str | None = None, alias: str | None = None) -> str:
    """The parent's description: per metric a Markdown table of mean, std, 95% CI, n and the
    paired difference against the baseline (with Holm-adjusted p for a family of candidates),
    the power of each comparison, then the best model and, with `alias`, why `best` went where."""
    finished = sum(r.get("status") == RunStatus.FINISHED for r in rows)
    seeds = sorted({int(r["seed"]) for r in rows})
    lines = [f"**{kind}** of {', '.join(stats.groups)} over seeds {', '.join(map(str, seeds))} "
             f"({finished}/{len(rows)} children finished; baseline {stats.baseline}).", ""]
    for metric in stats.metrics:
        holm_head, holm_rule = (" p (Holm) |", " ---: |") if stats.corrected else ("", "")
        lines += [f"#### {metric}", "",
                  f"| group | n | mean | std | 95% CI | diff vs baseline | diff 95% CI | p |{holm_head} significant |",
                  f"| --- | ---: | ---: | ---: | --- | ---: | --- | ---: |{holm_rule} --- |"]
        for group in stats.groups:
            s = stats.summaries.get(metric, {}).get(group)
            holm_cell = " – |" if stats.corrected else ""
            if s is None:
                lines.append(f"| {group} | 0 | – | – | – | – | – | – |{holm_cell} – |")
                continue
            p = stats.paired.get(metric, {}).get(group)
            ci = f"[{_num(s.ci_low)}, {_num(s.ci_high)}]" if s.ci_low is not None else "–"
            dci = f"[{_num(p.ci_low, '+.4f')}, {_num(p.ci_high, '+.4f')}]" if p and p.ci_low is not None else "–"
            adjusted = stats.adjusted.get(metric, {}).get(group)
            if stats.corrected:
                holm_cell = f" {_num(adjusted.p_holm if adjusted else None, '.3g')} |"
            sig = ("yes" if stats.significant(metric, group) else "no") if p else "–"
            lines.append(f"| {group} | {s.n} | {s.mean:.4f} | {_num(s.std)} | {ci} | "
                         f"{_num(p.mean_diff, '+.4f') if p else '–'} | {dci} | {_num(p.p_value, '.3g') if p else '–'} |"
                         f"{holm_cell} {sig} |")
        lines.append("")
        rule = "Holm-adjusted p" if stats.corrected else "p"
        if stats.paired.get(metric):
            lines += [f"Significant: {rule} ≤ α = {stats.alpha:g}. Power (80%, two-sided paired t):", ""]
            lines += [f"- {line}" for line in stats.power_lines(metric)] + [""]
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
    lines = [f"Pipeline **{name}**: {status}.", "", "| step | entry point | status | run | seconds |",
             "| --- | --- | --- | --- | ---: |"]
    for s in steps:
        run = f"`{s['run_id']}`" if s.get("run_id") else "–"
        seconds = s.get("duration_sec")
        lines.append(f"| {s['id']} | {s.get('entry_point', '')} | {s['status']} | {run} | "
                     f"{'' if seconds is None else seconds} |")
    model = next((r.get("model_uri") for r in ((s.get("result") or {}) for s in steps) if r.get("model_uri")), None)
    if model:
        lines += ["", f"Best model: `{model}`."]
    return "\n".join(lines)
