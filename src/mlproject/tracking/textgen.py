"""The pyfunc text-generation model: prompts in, generated text out, with no pickle anywhere.

A LoggedModel of this project is an MLflow "models from code" pyfunc (`textgen_code.py`, two
lines that build `TextGenerationModel`), so MLflow never unpickles a Python object to load it.
Its artifacts are plain data:

    artifacts/model.safetensors   the weights (tied embeddings stored once)
    artifacts/model_config.json   the resolved GPTConfig the weights belong to
    artifacts/tokenizer.json      the run's byte-level BPE tokenizer

`predict` takes a list of prompts or a DataFrame with a `prompt` column and returns the texts
(prompt + continuation, as `mlproject generate` prints them). The generation settings are
inference params of the signature, like MLflow's transformers flavor:

    mlflow.pyfunc.load_model("models:/gpt@best").predict(["The module"], params={"max_new_tokens": 20})
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from mlproject.errors import MlprojectError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"
TOKENIZER_FILE = "tokenizer.json"
PROMPT_COLUMN = "prompt"
CODE_FILE = Path(__file__).with_name("textgen_code.py")

# Inference params and their defaults. top_k 0 and top_p 1.0 mean "off"; seed -1 means unseeded
# (a ParamSpec cannot default to None).
PARAM_DEFAULTS: dict[str, Any] = {"max_new_tokens": 64, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                                  "repetition_penalty": 1.0, "seed": -1}
_PARAM_TYPES = {int: "long", float: "double"}

# One unnamed string column, as MLflow's transformers flavor declares for text generation: a
# plain list of prompts, a Series and a one-column DataFrame all match it.
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string")]),
    outputs=Schema([ColSpec("string")]),
    params=ParamSchema([ParamSpec(k, _PARAM_TYPES[type(v)], v) for k, v in PARAM_DEFAULTS.items()]),
)
INPUT_EXAMPLE = (["The module"], {"max_new_tokens": 8, "temperature": 0.0})


def save_artifacts(model: Any, tokenizer_path: str | Path, folder: str | Path) -> dict[str, str]:
    """Write weights, config and tokenizer into `folder`; return MLflow's `artifacts` mapping."""
    import dataclasses
    import shutil

    from safetensors.torch import save_model

    from mlproject.model.checkpoint import unwrap_model

    folder = Path(folder)
    bare = unwrap_model(model)
    # save_model (not save_file) stores a tied tensor once and records the alias.
    save_model(bare, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(bare.config), indent=1), encoding="utf-8")
    shutil.copyfile(tokenizer_path, folder / TOKENIZER_FILE)
    return {"weights": str(folder / WEIGHTS_FILE), "model_config": str(folder / CONFIG_FILE),
            "tokenizer": str(folder / TOKENIZER_FILE)}


def load_artifacts(folder: str | Path, device: Any = "cpu") -> tuple[Any, Path]:
    """(GPT in eval mode on `device`, tokenizer.json path) from a folder of the files above.

    Reads JSON and safetensors only: a tampered file is an error, never code that runs.
    """
    from safetensors.torch import load_model

    from mlproject.model.checkpoint import build_model

    folder = Path(folder)
    missing = [name for name in (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE) if not (folder / name).is_file()]
    if missing:
        raise MlprojectError(f"model folder {folder} has no {missing[0]}; it was not logged by this mlproject")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MlprojectError(f"{folder / CONFIG_FILE} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise MlprojectError(f"{folder / CONFIG_FILE} holds no model config mapping")
    model = build_model(config)
    try:
        load_model(model, str(folder / WEIGHTS_FILE), strict=True)
    except Exception as exc:  # safetensors raises its own error types for malformed files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MlprojectError(f"{folder / WEIGHTS_FILE} is not a safetensors file of this model: {first}") from None
    model.tie_weights()
    return model.to(device).eval(), folder / TOKENIZER_FILE


def prompts_of(model_input: Any) -> list[str]:
    """Prompts from a list/tuple of strings, a string, a Series or a DataFrame (`prompt` column)."""
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        column = PROMPT_COLUMN if PROMPT_COLUMN in model_input.columns else model_input.columns[0]
        model_input = model_input[column]
    if isinstance(model_input, dict) and PROMPT_COLUMN in model_input:
        model_input = model_input[PROMPT_COLUMN]
    values = list(model_input.tolist() if hasattr(model_input, "tolist") else model_input)
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise MlprojectError(f"prompts must be strings; got {type(bad[0]).__name__} {bad[0]!r}")
    return values


def generate_config(prompts: list[str], params: dict[str, Any] | None) -> Any:
    """The GenerateConfig of one predict call: the signature's params mapped to its fields."""
    from mlproject.inference.config import GenerateConfig

    given = {**PARAM_DEFAULTS, **(params or {})}
    unknown = sorted(set(given) - set(PARAM_DEFAULTS))
    if unknown:
        raise MlprojectError(f"unknown inference param {unknown[0]!r}; expected one of {', '.join(PARAM_DEFAULTS)}")
    cfg = GenerateConfig(prompts=prompts, max_new_tokens=int(given["max_new_tokens"]),
                         temperature=float(given["temperature"]), top_k=int(given["top_k"]) or None,
                         top_p=None if float(given["top_p"]) >= 1.0 else float(given["top_p"]),
                         repetition_penalty=float(given["repetition_penalty"]),
                         seed=None if int(given["seed"]) < 0 else int(given["seed"]), stream=False)
    cfg.validate()
    return cfg


class TextGenerationModel(mlflow.pyfunc.PythonModel):
    """Prompts -> generated texts (prompt + continuation), KV-cached, on CPU or the GPU."""

    def load_context(self, context: Any) -> None:
        from mlproject.data.tokenizer import load_tokenizer, special_ids
        from mlproject.training.device import select_device

        self.model, tokenizer_path = load_artifacts(Path(context.artifacts["weights"]).parent,
                                                    select_device("auto"))
        self.tokenizer = load_tokenizer(tokenizer_path)
        self.eot_id, _ = special_ids(self.tokenizer)

    # pd.DataFrame: what MLflow hands over after enforcing the signature (a list of prompts
    # becomes a one-column frame); MLflow infers no second signature from this hint.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        from mlproject.inference.generate import complete

        cfg = generate_config(prompts_of(model_input), params)
        return complete(self.model, self.tokenizer, cfg, self.eot_id)


def log_text_model(model: Any, *, tokenizer_path: str | Path, register_as: str | None = None, step: int = 0,
                   params: dict[str, Any] | None = None) -> str:
    """Log `model` as a pyfunc LoggedModel of the active run; return its models:/ URI.

    Requirements are given explicitly: inferring them loads the model in a subprocess, which
    costs seconds for nothing.
    """
    import torch

    import mlproject

    with tempfile.TemporaryDirectory(prefix="mlproject-model-") as tmp:
        artifacts = save_artifacts(model, tokenizer_path, tmp)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(CODE_FILE), artifacts=artifacts, signature=SIGNATURE,
            input_example=INPUT_EXAMPLE,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlproject=={mlproject.__version__}",
                              "tokenizers", "safetensors", "pandas"],
            registered_model_name=register_as, step=step, params=params)
    return info.model_uri
