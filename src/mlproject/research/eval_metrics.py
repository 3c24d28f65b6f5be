"""Which metrics a sweep may compare, and held-out evaluations of its children.

`val_loss` is nats per token of a run's own tokenizer: across vocabularies (a `vocab_size`
ablation) or datasets (`--eval-datasets` with several corpora) it ranks tokenizers and corpora,
not models. Bits per byte does not depend on either (`data.bpb`), so those sweeps warn about
per-token metrics and aggregate bpb by default.

`--eval-datasets` evaluates every finished child on registry datasets after training
(`mlproject evaluate` on the child run, metrics `eval/<dataset>/<metric>`), and the parent
aggregates `eval/<dataset>/bpb` across seeds like any summary metric.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mlproject.errors import ConfigError, MlprojectError
from mlproject.schema import RunStatus

# Summary metrics measured per token of the run's own tokenizer.
PER_TOKEN = ("val_loss_best", "val_ppl_best", "train_loss_last")
DEFAULT_METRICS = ["val_loss_best"]  # CompareConfig / AblationConfig default


def per_token(metric: str) -> bool:
    """Whether `metric` depends on the tokenizer (val_loss, ppl, eval/<ds>/loss, ...)."""
    return metric in PER_TOKEN or metric.rsplit("/", 1)[-1] in ("loss", "ppl", "token_acc")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def prefer_bpb(metrics: Sequence[str], why: str) -> list[str]:
    """`metrics` for a sweep whose per-token losses are not comparable (`why`): warn, and replace
    the default `val_loss_best` by `val_bpb_best`."""
    metrics = list(metrics)
    if metrics == DEFAULT_METRICS:
        warn(f"{why}: val_loss is nats per token of each tokenizer and is not comparable; "
             "aggregating val_bpb_best (bits per byte) instead")
        return ["val_bpb_best"]
    flagged = [m for m in metrics if per_token(m)]
    if flagged:
        warn(f"{why}: {', '.join(flagged)} {'is' if len(flagged) == 1 else 'are'} per token and not comparable; "
             "compare val_bpb_best (bits per byte)")
    return metrics


def eval_metric_names(datasets: Sequence[str]) -> list[str]:
    """The parent's aggregated metrics for `--eval-datasets`: `eval/<dataset>/bpb` each."""
    return [f"eval/{name}/bpb" for name in datasets]


def with_eval_metrics(metrics: Sequence[str], datasets: Sequence[str]) -> list[str]:
    """`metrics` plus the eval metrics of `datasets`; warns on per-token eval metrics across datasets."""
    if len(datasets) > 1:
        flagged = [m for m in metrics if m.startswith("eval/") and per_token(m)]
        if flagged:
            warn(f"a compare across datasets ({', '.join(datasets)}): {', '.join(flagged)} "
                 "are per token and not comparable across corpora; compare eval/<dataset>/bpb")
    return list(dict.fromkeys([*metrics, *eval_metric_names(datasets)]))


def check_eval_datasets(datasets: Sequence[str], source: str) -> None:
    """Every name a registry key whose data can be read now, before any run exists."""
    from mlproject.data.registry import get_spec
    from mlproject.data.sources import check_hub

    if len(set(datasets)) != len(datasets):
        raise ConfigError(f"{source}: eval_datasets={list(datasets)} has duplicates")
    for name in datasets:
        try:
            spec = get_spec(name)
        except ConfigError as exc:
            raise ConfigError(f"{source}: eval_datasets: {exc}") from None
        if spec.key == "local_jsonl":
            raise ConfigError(f"{source}: eval_datasets: local_jsonl needs files; evaluate local files with "
                              "`mlproject evaluate --local-path`")
        check_hub(spec)


def evaluate_children(run_ids: Sequence[str], datasets: Sequence[str], *, cache_dir: str | None,
                      device: str) -> None:
    """`mlproject evaluate` of every FINISHED child on `datasets`, logged to the child.

    A child that already has every `eval/<dataset>/bpb` (a resumed sweep) is not evaluated again.
    """
    from mlproject.inference.eval_config import EvaluateConfig
    from mlproject.app.evaluate import run_evaluate
    from mlproject.tracking.model_store import MlflowModelStore
    from mlproject.tracking.queries import get_run

    wanted = eval_metric_names(datasets)
    for run_id in run_ids:
        record = get_run(run_id)
        if record.status != RunStatus.FINISHED or all(m in record.metrics for m in wanted):
            continue
        print(f"--- evaluating child {record.run_name or run_id} on {', '.join(datasets)}", flush=True)
        try:
            run_evaluate(EvaluateConfig(run_id=run_id, datasets=list(datasets), cache_dir=cache_dir, device=device),
                         MlflowModelStore())
        except MlprojectError as exc:  # the child keeps its training metrics; the parent lacks this cell
            warn(f"evaluation of child {record.run_name or run_id} failed: {exc}")
