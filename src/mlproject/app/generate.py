"""`run_generate`: text from a run, a `models:/` URI or a local checkpoint.

The model's config always comes from its checkpoint (a model cannot be rebuilt with other
sizes than it was trained with); size flags are only checked against it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mlproject.errors import ConfigError, MlprojectError
from mlproject.inference.config import GenerateConfig
from mlproject.tracking.artifacts import (download_artifact_uri, download_checkpoint, download_tokenizer,
                                          load_logged_model)

SIZE_FIELDS = ("n_layer", "n_head", "d_model")


def check_sizes(cfg: GenerateConfig, model_config: Any) -> None:
    """A size flag that disagrees with the checkpoint's config is a one-line error."""
    for name in SIZE_FIELDS:
        wanted, actual = getattr(cfg, name), getattr(model_config, name)
        if wanted is not None and wanted != actual:
            raise ConfigError(f"generate: {name}={wanted} does not match the checkpoint's {name}={actual}; "
                              "the model config always comes from the checkpoint (drop the flag)")


def load_for_generation(cfg: GenerateConfig, workdir: Path, device: Any) -> tuple[Any, Path]:
    """(model in eval mode on `device`, tokenizer.json path) from the source `cfg` names."""
    from mlproject.model.checkpoint import load_model_checkpoint

    if cfg.run_id:
        checkpoint = download_checkpoint(cfg.run_id, workdir, kinds=("best", "last"))
        tokenizer = Path(cfg.tokenizer_path) if cfg.tokenizer_path else download_tokenizer(cfg.run_id, workdir)
        model, _ = load_model_checkpoint(checkpoint, device)
        return model, tokenizer
    if cfg.model_uri:
        model, tokenizer = load_logged_model(cfg.model_uri, workdir, device)
        return model, Path(cfg.tokenizer_path) if cfg.tokenizer_path else tokenizer
    if cfg.checkpoint and cfg.checkpoint.startswith("runs:/"):
        # The URI train prints (runs:/<id>/checkpoints/last.pt): the tokenizer defaults to that run's.
        checkpoint = download_artifact_uri(cfg.checkpoint, workdir / "checkpoint")
        run_id = cfg.checkpoint[len("runs:/"):].split("/", 1)[0]
        tokenizer = Path(cfg.tokenizer_path) if cfg.tokenizer_path else download_tokenizer(run_id, workdir)
        model, _ = load_model_checkpoint(checkpoint, device)
        return model, tokenizer
    if cfg.checkpoint:
        if not cfg.tokenizer_path:
            raise ConfigError("generate: --checkpoint needs --tokenizer-path (the run's tokenizer.json)")
        model, _ = load_model_checkpoint(cfg.checkpoint, device)
        return model, Path(cfg.tokenizer_path)
    raise ConfigError("generate: give one of --run-id, --model-uri or --checkpoint (with --tokenizer-path)")


def run_generate(cfg: GenerateConfig) -> list[str]:
    """Load the model and tokenizer `cfg` names, generate from its prompts, print and return the texts."""
    from mlproject.data.tokenizer import load_tokenizer, special_ids
    from mlproject.inference.generate import generate_text
    from mlproject.training.device import select_device

    device = select_device(cfg.device)
    with tempfile.TemporaryDirectory(prefix="mlproject-generate-") as tmp:
        model, tokenizer_path = load_for_generation(cfg, Path(tmp), device)
        check_sizes(cfg, model.config)
        tokenizer = load_tokenizer(tokenizer_path)
    if tokenizer.get_vocab_size() > model.config.vocab_size:
        raise MlprojectError(f"tokenizer {tokenizer_path.name} has {tokenizer.get_vocab_size()} tokens but the "
                             f"model only {model.config.vocab_size}; they are not from the same run")
    eot_id, _ = special_ids(tokenizer)
    texts = generate_text(model, tokenizer, cfg, eot_id)
    log_generations(cfg, texts)
    return texts


GENERATIONS_TABLE = "generations.json"


def log_generations(cfg: GenerateConfig, texts: list[str]) -> None:
    """Under `mlflow run -e generate` (MLFLOW_RUN_ID set): the settings as params and prompts,
    settings and outputs as an MLflow table (the UI's Evaluation/Artifacts view shows it)."""
    import os

    import mlflow
    from mlflow import MlflowClient

    from mlproject.config import to_dict
    from mlproject.tracking.client import describe_run
    from mlproject.tracking.client import log_params_once

    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    settings = {k: v for k, v in to_dict(cfg).items() if k != "prompts"}
    log_params_once(run_id, {**{f"generate.{k}": v for k, v in settings.items()},
                                             "generate.num_prompts": len(cfg.prompts)})
    n = len(texts)
    table = {"prompt": list(cfg.prompts), "output": texts,
             "completion": [t[len(p):] if t.startswith(p) else t for p, t in zip(cfg.prompts, texts)],
             **{k: [None if settings[k] is None else settings[k]] * n
                for k in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed")}}
    mlflow.log_table(table, artifact_file=GENERATIONS_TABLE, run_id=run_id)
    source = cfg.model_uri or (f"run {cfg.run_id}" if cfg.run_id else cfg.checkpoint)
    describe_run(run_id, name="generate", note=f"{n} sample(s) from `{source}`; see `{GENERATIONS_TABLE}`.")
