"""MlflowModelStore: the application's `ModelStore` for MLflow.

It fetches what generate, evaluate and export-hf name (a run's best or last checkpoint, a
`models:/` LoggedModel or registered version, a `runs:/` checkpoint URI) and records what they
produced: generations as a table of the step's run, evaluation metrics (prefixed by dataset,
`eval/wikitext2/bpb`) on the evaluated run or a new one tagged `Tag.EVALUATED_RUN`, and
a Hugging Face export as the run's `hf/` folder (optionally a transformers-flavor model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from mlproject.app.model_source import ModelRef, Source
from mlproject.config import to_dict
from mlproject.errors import MlprojectError
from mlproject.model.folder import TOKENIZER_FILE, WEIGHTS_FILE
from mlproject.protocol import process_run_id
from mlproject.schema import Artifact, RunRole, Tag, eval_checkpoint_sha256_tag
from mlproject.tracking import client
from mlproject.tracking.artifacts import download_artifact_uri, download_checkpoint, download_tokenizer, quiet
from mlproject.tracking.queries import experiment_name, get_run

EVAL_EXPERIMENT = "evaluations"                 # new evaluation runs of a bare checkpoint


def model_uri_run(model_uri: str) -> str | None:
    """The run a `models:/` URI was logged from (LoggedModel or registered version), if known."""
    try:
        return mlflow.models.get_model_info(model_uri).run_id
    except MlflowException as exc:
        raise MlprojectError(f"cannot load model {model_uri!r}: {str(exc).splitlines()[0]}") from None


class MlflowModelStore:
    """Models and model-command results in the current MLflow tracking store."""

    def fetch(self, ref: ModelRef, workdir: Path, *, command: str) -> Source:
        own_tokenizer = Path(ref.tokenizer_path) if ref.tokenizer_path else None
        if ref.run_id:
            get_run(ref.run_id)  # an id of no run: one line naming it, not MLflow's exception from the download
            path = download_checkpoint(ref.run_id, workdir / "ckpt", kinds=("best", "last"))
            return Source(path, own_tokenizer or download_tokenizer(ref.run_id, workdir), ref.run_id,
                          f"runs:/{ref.run_id}/checkpoints/{path.name}")
        if ref.model_uri:
            owner = model_uri_run(ref.model_uri)
            try:
                with quiet():
                    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.model_uri, dst_path=str(workdir)))
            except MlflowException as exc:
                raise MlprojectError(f"cannot load model {ref.model_uri!r}: {str(exc).splitlines()[0]}") from None
            folder = local / "artifacts"
            if not (folder / WEIGHTS_FILE).is_file():
                raise MlprojectError(f"model {ref.model_uri!r} has no artifacts/{WEIGHTS_FILE}; it was not "
                                     "logged by `mlproject`")
            return Source(folder / WEIGHTS_FILE, own_tokenizer or folder / TOKENIZER_FILE, owner, ref.model_uri)
        # The URI train prints (runs:/<id>/checkpoints/last.pt): the tokenizer defaults to that run's.
        assert ref.checkpoint is not None and ref.checkpoint.startswith("runs:/")
        path = download_artifact_uri(ref.checkpoint, workdir / "checkpoint")
        run_id = ref.checkpoint[len("runs:/"):].split("/", 1)[0]
        return Source(path, own_tokenizer or download_tokenizer(run_id, workdir), run_id, ref.checkpoint)

    def run_data(self, run_id: str, workdir: Path) -> dict[str, Any] | None:
        import yaml

        try:
            with quiet():
                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=Artifact.RESOLVED_CONFIG,
                                                            dst_path=str(workdir / "config"))
        except MlflowException:
            return None
        return (yaml.safe_load(Path(local).read_text(encoding="utf-8")) or {}).get("data")

    # ------------------------------------------------------------------------- records

    def record_generations(self, cfg: Any, texts: list[str]) -> None:
        """Under `mlflow run -e generate` (a handed run): the settings as params, and prompts,
        settings and outputs as an MLflow table (the UI's Evaluation/Artifacts view shows it)."""
        run_id = process_run_id()
        if not run_id:
            return
        settings = {k: v for k, v in to_dict(cfg).items() if k != "prompts"}
        client.log_params_once(run_id, {**{f"generate.{k}": v for k, v in settings.items()},
                                        "generate.num_prompts": len(cfg.prompts)})
        n = len(texts)
        table = {"prompt": list(cfg.prompts), "output": texts,
                 "completion": [t[len(p):] if t.startswith(p) else t for p, t in zip(cfg.prompts, texts)],
                 **{k: [settings[k]] * n
                    for k in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed")}}
        mlflow.log_table(table, artifact_file=Artifact.GENERATIONS, run_id=run_id)
        source = cfg.model_uri or (f"run {cfg.run_id}" if cfg.run_id else cfg.checkpoint)
        client.describe_run(run_id, name="generate", note=f"{n} sample(s) from `{source}`; "
                                                               f"see `{Artifact.GENERATIONS}`.")

    def record_evaluation(self, cfg: Any, source: Source, metrics: dict[str, float], step: int) -> str | None:
        target = self._evaluation_run(cfg, source)
        if target is None:
            return None
        client.log_metrics(target, metrics, step=step)
        tags = {Tag.EVAL_CHECKPOINT_SHA256: source.sha256, Tag.EVAL_CHECKPOINT: source.uri}
        names = {k.split("/")[1] for k in metrics if k.startswith("eval/")}
        tags.update({eval_checkpoint_sha256_tag(name): source.sha256 for name in names})
        client.set_tags(target, tags)
        print(f"evaluate: logged {len(metrics)} metrics to run {target}", flush=True)
        return target

    def _evaluation_run(self, cfg: Any, source: Source) -> str | None:
        """The run that receives the metrics: the evaluated run, or a new one linked to it."""
        if not cfg.log_to_mlflow:
            return None
        handed = process_run_id()
        if source.run_id and not cfg.new_run:
            if handed and handed != source.run_id:  # `mlflow run -e evaluate`: its run points at the result
                from mlproject.tracking.project_run import mark_unused

                client.set_tags(handed, {Tag.EVALUATED_RUN: source.run_id})
                mark_unused(handed, {Tag.EVALUATED_RUN: source.run_id})  # and is deleted: it holds nothing else
            return source.run_id
        experiment = cfg.experiment_name
        if experiment is None and source.run_id:
            experiment = experiment_name(get_run(source.run_id).experiment_id)
        tags = {Tag.ROLE: RunRole.EVALUATION, Tag.EVAL_CHECKPOINT: source.uri}
        if source.run_id:
            tags[Tag.EVALUATED_RUN] = source.run_id
        run_id, _ = client.open_run(experiment=experiment or EVAL_EXPERIMENT, run_name="evaluate", tags=tags)
        return run_id

    def record_export(self, cfg: Any, source: Source, folder: Path, kind: str) -> None:
        assert source.run_id is not None
        client.client().log_artifacts(source.run_id, str(folder), Artifact.HF_EXPORT)
        client.set_tags(source.run_id, {Tag.HF_EXPORT_CLASS: kind})
        print(f"export-hf: logged to run {source.run_id} as {Artifact.HF_EXPORT}/", flush=True)
        if cfg.log_transformers:
            _log_transformers(source.run_id, folder)


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
