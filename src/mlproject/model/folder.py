"""A model as a folder of plain data: safetensors weights, JSON config, the tokenizer.

    model.safetensors   the weights (tied embeddings stored once)
    model_config.json   the resolved GPTConfig the weights belong to
    tokenizer.json      the run's byte-level BPE tokenizer

This is the layout of a LoggedModel's `artifacts/` (tracking/textgen.py). Loading reads JSON
and safetensors only: a tampered file is an error, never code that runs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from mlproject.errors import MlprojectError
from mlproject.io import plain_modes

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"
TOKENIZER_FILE = "tokenizer.json"


def save_folder(model: Any, tokenizer_path: str | Path, folder: str | Path) -> dict[str, Path]:
    """Write weights, config and tokenizer into `folder`; return {weights, model_config, tokenizer}: path."""
    from safetensors.torch import save_model

    from mlproject.model.checkpoint import unwrap_model

    folder = Path(folder)
    bare = unwrap_model(model)
    # save_model (not save_file) stores a tied tensor once and records the alias.
    save_model(bare, str(folder / WEIGHTS_FILE))
    plain_modes(folder / WEIGHTS_FILE)  # safetensors creates 0o600; its siblings follow the umask
    (folder / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(bare.config), indent=1), encoding="utf-8")
    shutil.copyfile(tokenizer_path, folder / TOKENIZER_FILE)
    return {"weights": folder / WEIGHTS_FILE, "model_config": folder / CONFIG_FILE, "tokenizer": folder / TOKENIZER_FILE}


def load_folder(folder: str | Path, device: Any = "cpu") -> tuple[Any, Path]:
    """(GPT in eval mode on `device`, tokenizer.json path) from a folder of the files above."""
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
