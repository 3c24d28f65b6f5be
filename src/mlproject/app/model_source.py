"""The model a command uses (generate, evaluate, export-hf): one local file, hashed, then loaded.

A command names its model by a run id, a `models:/` URI, a `runs:/` checkpoint URI or a local
checkpoint. A `ModelStore` (for MLflow: `tracking.model_store.MlflowModelStore`) fetches the
first three to one local file; a local checkpoint needs no store. The sha256 is computed on
that file and the model loaded from the very same file, so what a command records as "the
weights used" is what it used (`evaluate --expected-sha256` refuses a mismatch).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlproject.errors import ConfigError
from mlproject.model.folder import WEIGHTS_FILE

if TYPE_CHECKING:
    from mlproject.app.tracker import ModelStore


@dataclass
class ModelRef:
    """How a command names its model: exactly one of run_id, model_uri, checkpoint."""

    run_id: str | None = None
    model_uri: str | None = None
    checkpoint: str | None = None      # a local file or a runs:/ URI
    tokenizer_path: str | None = None  # overrides the run's / model's tokenizer


@dataclass
class Source:
    """The one local checkpoint file a command uses, and the run it belongs to (if any)."""

    checkpoint: Path
    tokenizer: Path
    run_id: str | None
    uri: str
    sha256: str = ""


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def local_source(ref: ModelRef, *, command: str) -> Source:
    """A checkpoint file on this machine, with the tokenizer it needs."""
    assert ref.checkpoint is not None
    path = Path(ref.checkpoint).expanduser()
    if not path.is_file():
        raise ConfigError(f"{command}: checkpoint={ref.checkpoint!r} does not exist; expected a checkpoint file")
    if not ref.tokenizer_path:
        raise ConfigError(f"{command}: --checkpoint needs --tokenizer-path (the run's tokenizer.json)")
    return Source(path, Path(ref.tokenizer_path), None, str(path.resolve()))


def resolve_source(ref: ModelRef, workdir: Path, store: ModelStore | None, *, command: str) -> Source:
    """The hashed local file `ref` names (fetched through `store` unless it is a local checkpoint)."""
    if not (ref.run_id or ref.model_uri or ref.checkpoint):
        raise ConfigError(f"{command}: give one of --run-id, --model-uri or --checkpoint (with --tokenizer-path)")
    if ref.run_id or ref.model_uri or (ref.checkpoint or "").startswith("runs:/"):
        if store is None:
            raise ConfigError(f"{command}: {ref.run_id or ref.model_uri or ref.checkpoint} lives in a tracking "
                              "store; this command was started without one")
        source = store.fetch(ref, workdir, command=command)
    else:
        source = local_source(ref, command=command)
    source.sha256 = sha256_file(source.checkpoint)
    return source


def load_source(source: Source, device: Any) -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, checkpoint state) from the very file `resolve_source` hashed: a
    checkpoint, or the safetensors weights of a logged model (read with its JSON config)."""
    from mlproject.model.checkpoint import load_model_checkpoint

    if source.checkpoint.name == WEIGHTS_FILE:
        from mlproject.model.folder import load_folder

        model, _ = load_folder(source.checkpoint.parent, device)
        return model, {}
    return load_model_checkpoint(source.checkpoint, device)
