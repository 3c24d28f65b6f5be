"""`run_evaluate` and `run_export_hf`: evaluation and Hugging Face export of a run, a `models:/`
URI or a checkpoint.

The model is one local file, hashed and then loaded (`app.model_source`): the hash recorded
is the hash of the weights evaluated, and `--expected-sha256` refuses a mismatch. The store
(`tracking.model_store`) records the metrics, prefixed by the dataset (`eval/wikitext2/bpb`),
on the evaluated run or, with `new_run`, on a new run linked to it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlproject.app.model_source import ModelRef, Source, load_source, resolve_source
from mlproject.app.tracker import ModelStore
from mlproject.errors import ConfigError, MlprojectError
from mlproject.inference.eval_config import EvaluateConfig, ExportConfig
from mlproject.protocol import result_line
from mlproject.schema import RunStatus


@dataclass
class EvaluateOutcome:
    run_id: str | None                               # where the metrics were logged
    sha256: str
    metrics: dict[str, float] = field(default_factory=dict)  # full MLflow names: eval/<ds>/<metric>, lm_eval/...


# ----------------------------------------------------------------------------- evaluate

def _eval_texts(cfg: EvaluateConfig, source: Source, tokenizer: Any, eot_id: int, block_size: int,
                workdir: Path, store: ModelStore | None) -> list[Any]:
    """One EvalText per dataset named by `cfg` (the run's own dataset by default), local files last."""
    from mlproject.config import from_dict
    from mlproject.data.config import DataConfig, DataRuntimeConfig
    from mlproject.data.sources import SPLITS, check_hub, resolve_corpus
    from mlproject.inference.evaluate import encode_documents

    run_data = store.run_data(source.run_id, workdir) if source.run_id and store is not None else None
    names = list(cfg.datasets)
    if not names and not cfg.local_path:
        if not run_data:
            raise ConfigError("evaluate: give --datasets (or --local-path); a checkpoint has no run dataset")
        names = [run_data["dataset"]]
    splits = {"val": ("val",), "train": ("train",), "all": SPLITS}[cfg.split]
    cache_root = DataRuntimeConfig(cache_dir=cfg.cache_dir).cache_root
    caps = {"max_train_docs": cfg.max_docs, "max_val_docs": cfg.max_docs} if cfg.max_docs else {}
    texts = []
    for name in names:
        if run_data and run_data.get("dataset") == name:
            # the run's own corpus settings (caps, split seed), so `val` is the split it validated on
            keep = ("dataset", "max_train_docs", "max_val_docs", "val_fraction", "split_seed", "local_path",
                    "local_format", "local_field")
            data = {k: run_data[k] for k in keep if k in run_data}
        else:
            data = {"dataset": name}
        data_cfg = from_dict(DataConfig, {**data, **caps}, source=f"evaluate: {name}")
        corpus = resolve_corpus(data_cfg, cache_root)
        check_hub(corpus.spec)
        docs = (text for _, text in corpus.documents(splits))
        texts.append(encode_documents(name, docs, tokenizer, eot_id, cfg.max_tokens, block_size))
    if cfg.local_path:
        data_cfg = from_dict(DataConfig, {"dataset": "local_jsonl", "local_path": cfg.local_path,
                                          "local_format": cfg.local_format},
                             source="evaluate: local_path")
        corpus = resolve_corpus(data_cfg, cache_root)
        assert corpus.local is not None
        name = cfg.local_name or corpus.local.paths[0].stem
        docs = (text for _, text in corpus.documents(SPLITS))  # local files are evaluated whole
        texts.append(encode_documents(name, docs, tokenizer, eot_id, cfg.max_tokens, block_size))
    return texts


def run_evaluate(cfg: EvaluateConfig, store: ModelStore | None = None) -> EvaluateOutcome:
    """Evaluate the model `cfg` names; print the metrics and record them through `store`."""
    from mlproject.data.tokenizer import load_tokenizer, special_ids
    from mlproject.inference.evaluate import evaluate_text, format_metrics
    from mlproject.training.device import select_device

    if cfg.tasks:
        from mlproject.inference.harness import require_harness

        require_harness()
    device = select_device(cfg.device)
    with tempfile.TemporaryDirectory(prefix="mlproject-evaluate-") as tmp:
        workdir = Path(tmp)
        source = resolve_source(ModelRef(cfg.run_id, cfg.model_uri, cfg.checkpoint, cfg.tokenizer_path), workdir,
                                store, command="evaluate")
        if cfg.expected_sha256 and cfg.expected_sha256 != source.sha256:
            raise MlprojectError(f"evaluate: {source.uri} has sha256 {source.sha256}, not expected_sha256="
                                 f"{cfg.expected_sha256}")
        model, state = load_source(source, device)  # the file just hashed
        tokenizer = load_tokenizer(source.tokenizer)
        eot_id, _ = special_ids(tokenizer)
        block_size = cfg.block_size or model.config.block_size
        print(f"evaluate: {source.uri} (sha256 {source.sha256[:16]}..., step {state.get('step', '?')})", flush=True)
        metrics: dict[str, float] = {}
        for text in _eval_texts(cfg, source, tokenizer, eot_id, block_size, workdir, store):
            values = evaluate_text(model, text, tokenizer, max_tokens=cfg.max_tokens, batch_size=cfg.batch_size,
                                   block_size=block_size, device=device)
            print(format_metrics(text.name, values), flush=True)
            metrics.update({f"eval/{text.name}/{k}": v for k, v in values.items()})
        if cfg.tasks:
            from mlproject.inference.harness import run_tasks
            from mlproject.model.export_plan import CUSTOM_KIND
            from mlproject.model.hf_export import export_hf

            hf_dir = workdir / "hf"
            kind = export_hf(model.cpu(), source.tokenizer, hf_dir, allow_custom_code=cfg.allow_custom_code)
            metrics.update(run_tasks(hf_dir, cfg.tasks, task_dir=cfg.task_dir, num_fewshot=cfg.num_fewshot,
                                     limit=cfg.limit, batch_size=cfg.batch_size, device=str(device),
                                     trust_remote_code=kind == CUSTOM_KIND))
    step = int(state.get("step", 0))
    target = store.record_evaluation(cfg, source, metrics, step) if store is not None else None
    # the machine-readable last line the pipeline runner and the DAG read
    print(result_line({"step": "evaluate", "run_id": target, "evaluated_run": source.run_id,
                       "checkpoint_sha256": source.sha256, "status": RunStatus.FINISHED}), flush=True)
    return EvaluateOutcome(target, source.sha256, metrics)


# ----------------------------------------------------------------------------- export

def run_export_hf(cfg: ExportConfig, store: ModelStore | None = None) -> Path:
    """Write the HF folder; the store logs it to the run as `hf/` (and as a transformers model if asked)."""
    from mlproject.model.hf_export import EXPORT_KIND, export_hf, plan_for
    from mlproject.outdir import check_replaceable

    out = cfg.folder()
    check_replaceable(out, EXPORT_KIND)  # a bad --output is refused before the model is fetched
    with tempfile.TemporaryDirectory(prefix="mlproject-export-") as tmp:
        source = resolve_source(ModelRef(cfg.run_id, cfg.model_uri, cfg.checkpoint, cfg.tokenizer_path), Path(tmp),
                                store, command="export-hf")
        model, _ = load_source(source, "cpu")
        if cfg.log_transformers and cfg.allow_custom_code and plan_for(model).builtin is None:
            # MLflow's transformers flavor re-saves the model without its code files: it would not load
            raise MlprojectError("export-hf: --log-transformers logs built-in transformers classes only; this model "
                                 "exports as custom code, logged to the run as the folder hf/ (drop "
                                 "--log-transformers)")
        kind = export_hf(model, source.tokenizer, out, allow_custom_code=cfg.allow_custom_code)
    print(f"export-hf: {source.uri} -> {out} ({kind}, sha256 {source.sha256[:16]}...)", flush=True)
    if cfg.log_transformers and not (store is not None and source.run_id and cfg.log_to_run):
        raise MlprojectError("export-hf: --log-transformers needs a run (--run-id or --model-uri)")
    if store is not None and source.run_id and cfg.log_to_run:
        store.record_export(cfg, source, out, kind)
    return out
