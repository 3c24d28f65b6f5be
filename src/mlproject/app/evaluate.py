"""`run_evaluate` and `run_export_hf`: evaluation and Hugging Face export of a run, a `models:/`
URI or a checkpoint, recorded in MLflow.

The checkpoint is resolved to one local file first, its sha256 computed, and the model loaded
from that same file: the hash recorded in the run is the hash of the weights evaluated (an
evaluation cannot silently use other weights, and `--expected-sha256` refuses a mismatch).
Metrics go to the evaluated run, prefixed by the dataset (`eval/wikitext2/bpb`), or, with
`new_run`, to a new run tagged `mlproject.evaluated_run` with the evaluated run's id.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from mlproject.errors import ConfigError, MlprojectError
from mlproject.protocol import result_line
from mlproject.inference.eval_config import EvaluateConfig, ExportConfig
from mlproject.tracking.artifacts import CONFIG_ARTIFACT, download_checkpoint, download_tokenizer, quiet
from mlproject.tracking.textgen import TOKENIZER_FILE, WEIGHTS_FILE

EVALUATED_RUN_TAG = "mlproject.evaluated_run"   # on a separate evaluation run: the run it evaluated
SHA_TAG = "mlproject.eval.checkpoint_sha256"    # sha256 of the checkpoint file last evaluated
SOURCE_TAG = "mlproject.eval.checkpoint"        # where that file came from (runs:/, models:/ or a path)
HF_ARTIFACT = "hf"                              # the export's artifact folder in the run
EVAL_EXPERIMENT = "evaluations"                 # new evaluation runs of a bare checkpoint


@dataclass
class Source:
    """The one local checkpoint file a command uses, and the run it belongs to (if any)."""

    checkpoint: Path
    tokenizer: Path
    run_id: str | None
    uri: str
    sha256: str = ""


@dataclass
class EvaluateOutcome:
    run_id: str | None                               # where the metrics were logged
    sha256: str
    metrics: dict[str, float] = field(default_factory=dict)  # full MLflow names: eval/<ds>/<metric>, lm_eval/...


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_uri_run(model_uri: str) -> str | None:
    """The run a `models:/` URI was logged from (LoggedModel or registered version), if known."""
    try:
        return mlflow.models.get_model_info(model_uri).run_id
    except mlflow.exceptions.MlflowException as exc:
        raise MlprojectError(f"cannot load model {model_uri!r}: {str(exc).splitlines()[0]}") from None


def resolve_source(run_id: str | None, model_uri: str | None, checkpoint: str | None, tokenizer_path: str | None,
                   workdir: Path) -> Source:
    """Download (or find) the checkpoint and tokenizer; hash the checkpoint."""
    if run_id:
        path = download_checkpoint(run_id, workdir / "ckpt", kinds=("best", "last"))
        tokenizer = Path(tokenizer_path) if tokenizer_path else download_tokenizer(run_id, workdir)
        source = Source(path, tokenizer, run_id, f"runs:/{run_id}/checkpoints/{path.name}")
    elif model_uri:
        owner = model_uri_run(model_uri)
        try:
            with quiet():
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(workdir)))
        except mlflow.exceptions.MlflowException as exc:
            raise MlprojectError(f"cannot load model {model_uri!r}: {str(exc).splitlines()[0]}") from None
        folder = local / "artifacts"
        if not (folder / WEIGHTS_FILE).is_file():
            raise MlprojectError(f"model {model_uri!r} has no artifacts/{WEIGHTS_FILE}; it was not "
                                 "logged by `mlproject`")
        tokenizer = Path(tokenizer_path) if tokenizer_path else folder / TOKENIZER_FILE
        source = Source(folder / WEIGHTS_FILE, tokenizer, owner, model_uri)
    else:
        assert checkpoint is not None
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ConfigError(f"checkpoint={checkpoint!r} does not exist; expected a checkpoint file")
        if not tokenizer_path:
            raise ConfigError("--checkpoint needs --tokenizer-path (the run's tokenizer.json)")
        source = Source(path, Path(tokenizer_path), None, str(path.resolve()))
    source.sha256 = sha256_file(source.checkpoint)
    return source


def load_source(source: Source, device: Any) -> tuple[Any, dict[str, Any]]:
    """(model, checkpoint state) from the very file `resolve_source` hashed: a checkpoint, or the
    safetensors weights of a logged model (read with its JSON config, never unpickled)."""
    from mlproject.model.checkpoint import load_model_checkpoint

    if source.checkpoint.name == WEIGHTS_FILE:
        from mlproject.tracking.textgen import load_artifacts

        model, _ = load_artifacts(source.checkpoint.parent, device)
        return model, {}
    return load_model_checkpoint(source.checkpoint, device)


def _run_data_section(run_id: str, workdir: Path) -> dict[str, Any] | None:
    """The `data` section of a run's resolved config (its dataset, caps and split), if logged."""
    import yaml

    try:
        with quiet():
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CONFIG_ARTIFACT,
                                                        dst_path=str(workdir / "config"))
    except mlflow.exceptions.MlflowException:
        return None
    return (yaml.safe_load(Path(local).read_text(encoding="utf-8")) or {}).get("data")


# ----------------------------------------------------------------------------- evaluate

def _eval_texts(cfg: EvaluateConfig, source: Source, tokenizer: Any, eot_id: int, block_size: int,
                workdir: Path) -> list[Any]:
    """One EvalText per dataset named by `cfg` (the run's own dataset by default), local files last."""
    from mlproject.config import from_dict
    from mlproject.data.config import DataConfig
    from mlproject.data.sources import SPLITS, check_hub, resolve_corpus
    from mlproject.inference.evaluate import encode_documents

    run_data = _run_data_section(source.run_id, workdir) if source.run_id else None
    names = list(cfg.datasets)
    if not names and not cfg.local_path:
        if not run_data:
            raise ConfigError("evaluate: give --datasets (or --local-path); a checkpoint has no run dataset")
        names = [run_data["dataset"]]
    splits = {"val": ("val",), "train": ("train",), "all": SPLITS}[cfg.split]
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
        data_cfg = from_dict(DataConfig, {**data, **caps, "cache_dir": cfg.cache_dir}, source=f"evaluate: {name}")
        corpus = resolve_corpus(data_cfg)
        check_hub(corpus.spec)
        docs = (text for _, text in corpus.documents(splits))
        texts.append(encode_documents(name, docs, tokenizer, eot_id, cfg.max_tokens, block_size))
    if cfg.local_path:
        data_cfg = from_dict(DataConfig, {"dataset": "local_jsonl", "local_path": cfg.local_path,
                                          "local_format": cfg.local_format, "cache_dir": cfg.cache_dir},
                             source="evaluate: local_path")
        corpus = resolve_corpus(data_cfg)
        assert corpus.local is not None
        name = cfg.local_name or corpus.local.paths[0].stem
        docs = (text for _, text in corpus.documents(SPLITS))  # local files are evaluated whole
        texts.append(encode_documents(name, docs, tokenizer, eot_id, cfg.max_tokens, block_size))
    return texts


def _log_target(cfg: EvaluateConfig, source: Source) -> str | None:
    """The run that receives the metrics: the evaluated run, or a new one linked to it."""
    from mlproject.tracking import client
    from mlproject.tracking.queries import get_run

    if not cfg.log_to_mlflow:
        return None
    env_run = os.environ.get("MLFLOW_RUN_ID")
    if source.run_id and not cfg.new_run:
        if env_run and env_run != source.run_id:  # `mlflow run -e evaluate`: its run points at the result
            client.set_tags(env_run, {EVALUATED_RUN_TAG: source.run_id})
        return source.run_id
    experiment = cfg.experiment_name
    if experiment is None and source.run_id:
        experiment = MlflowClient().get_experiment(get_run(source.run_id).experiment_id).name
    tags = {"mlproject.role": "evaluation", SOURCE_TAG: source.uri}
    if source.run_id:
        tags[EVALUATED_RUN_TAG] = source.run_id
    run_id, _ = client.open_run(experiment=experiment or EVAL_EXPERIMENT, run_name="evaluate", tags=tags)
    return run_id


def run_evaluate(cfg: EvaluateConfig) -> EvaluateOutcome:
    """Evaluate the model `cfg` names; print the metrics and log them (see the module docstring)."""
    from mlproject.data.tokenizer import load_tokenizer, special_ids
    from mlproject.inference.evaluate import evaluate_text, format_metrics
    from mlproject.tracking import client
    from mlproject.training.device import select_device

    device = select_device(cfg.device)
    with tempfile.TemporaryDirectory(prefix="mlproject-evaluate-") as tmp:
        workdir = Path(tmp)
        source = resolve_source(cfg.run_id, cfg.model_uri, cfg.checkpoint, cfg.tokenizer_path, workdir)
        if cfg.expected_sha256 and cfg.expected_sha256 != source.sha256:
            raise MlprojectError(f"evaluate: {source.uri} has sha256 {source.sha256}, not expected_sha256="
                                 f"{cfg.expected_sha256}")
        model, state = load_source(source, device)  # the file just hashed
        tokenizer = load_tokenizer(source.tokenizer)
        eot_id, _ = special_ids(tokenizer)
        block_size = cfg.block_size or model.config.block_size
        print(f"evaluate: {source.uri} (sha256 {source.sha256[:16]}..., step {state.get('step', '?')})", flush=True)
        metrics: dict[str, float] = {}
        for text in _eval_texts(cfg, source, tokenizer, eot_id, block_size, workdir):
            values = evaluate_text(model, text, tokenizer, max_tokens=cfg.max_tokens, batch_size=cfg.batch_size,
                                   block_size=block_size, device=device)
            print(format_metrics(text.name, values), flush=True)
            metrics.update({f"eval/{text.name}/{k}": v for k, v in values.items()})
        if cfg.tasks:
            from mlproject.inference.harness import run_tasks
            from mlproject.model.hf_export import export_hf

            hf_dir = workdir / "hf"
            export_hf(model.cpu(), source.tokenizer, hf_dir)
            metrics.update(run_tasks(hf_dir, cfg.tasks, task_dir=cfg.task_dir, num_fewshot=cfg.num_fewshot,
                                     limit=cfg.limit, batch_size=cfg.batch_size, device=str(device)))
    target = _log_target(cfg, source)
    if target is not None:
        client.log_metrics(target, metrics, step=int(state.get("step", 0)))
        tags = {SHA_TAG: source.sha256, SOURCE_TAG: source.uri}
        names = {k.split("/")[1] for k in metrics if k.startswith("eval/")}
        tags.update({f"mlproject.eval.{name}.checkpoint_sha256": source.sha256 for name in names})
        client.set_tags(target, tags)
        print(f"evaluate: logged {len(metrics)} metrics to run {target}", flush=True)
    # the machine-readable last line the pipeline runner and the DAG read
    print(result_line({"step": "evaluate", "run_id": target, "evaluated_run": source.run_id,
                       "checkpoint_sha256": source.sha256, "status": "FINISHED"}), flush=True)
    return EvaluateOutcome(target, source.sha256, metrics)


# ----------------------------------------------------------------------------- export

def run_export_hf(cfg: ExportConfig) -> Path:
    """Write the HF folder; log it to the run as `hf/` (and as a transformers model if asked)."""
    from mlproject.model.hf_export import export_hf

    with tempfile.TemporaryDirectory(prefix="mlproject-export-") as tmp:
        source = resolve_source(cfg.run_id, cfg.model_uri, cfg.checkpoint, cfg.tokenizer_path, Path(tmp))
        model, _ = load_source(source, "cpu")
        cls = export_hf(model, source.tokenizer, cfg.output)
    out = Path(cfg.output)
    print(f"export-hf: {source.uri} -> {out} ({cls}, sha256 {source.sha256[:16]}...)", flush=True)
    if source.run_id and cfg.log_to_run:
        client = MlflowClient()
        client.log_artifacts(source.run_id, str(out), HF_ARTIFACT)
        client.set_tag(source.run_id, "mlproject.hf_export_class", cls)
        print(f"export-hf: logged to run {source.run_id} as {HF_ARTIFACT}/", flush=True)
        if cfg.log_transformers:
            _log_transformers(source.run_id, out)
    elif cfg.log_transformers:
        raise MlprojectError("export-hf: --log-transformers needs a run (--run-id or --model-uri)")
    return out


def _log_transformers(run_id: str, folder: Path) -> str:
    """The export as an MLflow transformers-flavor model of the run (a text-generation pipeline)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    # Explicit requirements: inferring them imports every optional package transformers knows of.
    requirements = [f"transformers=={transformers.__version__}", f"torch=={torch.__version__.split('+')[0]}",
                    "tokenizers", "safetensors"]
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None), quiet():
        info = mlflow.transformers.log_model({"model": model, "tokenizer": tokenizer}, name="hf_model",
                                             task="text-generation", pip_requirements=requirements)
    print(f"export-hf: transformers model {info.model_uri}", flush=True)
    return info.model_uri
