"""Checkpoint files and the model in them: one dict per file, written atomically, read back
with `weights_only=True`.

Every checkpoint is `{"format": "mlproject-checkpoint", "version": 1, **entries}`; a model
checkpoint's entries are "model_config" (the resolved GPTConfig as a dict) and "model" (the
unwrapped state dict). Training checkpoints add the training state to these
(`training.checkpoint`); anything that only needs the model (generation, evaluation, export)
reads them from here, without the training stage.

Only tensors, dicts, lists, tuples and primitives are stored, so loading never unpickles
arbitrary objects (`torch.load(weights_only=True)`), and a checkpoint from an untrusted run
cannot execute code.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from mlproject.errors import MlprojectError
from mlproject.io import atomic_open

FORMAT = "mlproject-checkpoint"
VERSION = 1

# Prefixes that wrappers add to parameter names: DDP (`module.`) and torch.compile (`_orig_mod.`).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside DDP and/or torch.compile wrappers."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def clean_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A state dict with wrapper prefixes removed from every key."""
    out = {}
    for key, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        out[key] = value
    return out


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write `state` (plus the format marker) to `path` atomically; returns the path.

    The bytes go to a temporary file in the same directory, are flushed and fsynced, then
    `os.replace` swaps it in: a crash mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **state}
    try:
        with atomic_open(path, "wb", fsync=True) as f:
            torch.save(payload, f)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write (disk full) as RuntimeError
        raise MlprojectError(f"could not write checkpoint {path}: {_write_failure(exc, path.parent)}; "
                             f"{'the previous one is unchanged' if path.exists() else 'no checkpoint was written'}"
                             ) from exc
    return path


def _write_failure(exc: BaseException, folder: Path) -> str:
    """Why a write failed, in words: the OS error, or the free space left where torch hides it."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "the write failed"
    return f"the write failed ({free / 2**20:.1f} MiB free on that disk; is it full?)"


def read_torch_file(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """`torch.load(weights_only=True)` of a file; missing, empty, truncated or refused is a one-line MlprojectError."""
    path = Path(path)
    if not path.is_file():
        raise MlprojectError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise MlprojectError(f"checkpoint {path} is empty")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler words every refusal alike; only one that names a class or
        # function (a GLOBAL) means a file that would run code. Anything else is not a checkpoint.
        blocked = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), "")
        if not blocked:
            raise MlprojectError(f"checkpoint {path} is unreadable (truncated, corrupted or not a "
                                 f"torch file: {type(exc).__name__})") from None
        raise MlprojectError(f"checkpoint {path} holds objects other than tensors and plain containers"
                             f" ({blocked}); refused by the weights-only loader") from None
    except Exception as exc:  # torch raises several types for truncated or non-torch files
        raise MlprojectError(f"checkpoint {path} is unreadable (truncated, corrupted or not a "
                             f"torch file: {type(exc).__name__})") from None


def check_format(state: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """`state` if it carries our format marker and version, else a one-line MlprojectError."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        from mlproject.model.original import is_original_checkpoint

        hint = ("; it is the original suite's checkpoint: generate, evaluate and export-hf read it as it is, "
                "`mlproject import-original` converts it") if is_original_checkpoint(state) else ""
        raise MlprojectError(f"{path} is not an mlproject checkpoint (no {FORMAT!r} format marker){hint}")
    if state.get("version") != VERSION:
        raise MlprojectError(f"checkpoint {path} has format version {state.get('version')!r}; "
                             f"this mlproject reads version {VERSION}")
    return state


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint; a missing, empty, truncated or foreign file is a one-line MlprojectError."""
    return check_format(read_torch_file(path, map_location), path)


def model_state(model: torch.nn.Module) -> dict[str, Any]:
    """The checkpoint entries of a bare model: its resolved config and unwrapped weights."""
    bare = unwrap_model(model)
    return {"model_config": dataclasses.asdict(bare.config),
            "model": clean_state_dict(bare.state_dict())}


def save_model_checkpoint(path: str | os.PathLike[str], model: torch.nn.Module) -> Path:
    """Write the model's config and weights only (for generation, import-hf)."""
    return save_checkpoint(path, model_state(model))


def build_model(model_config: dict[str, Any]) -> torch.nn.Module:
    """A GPT from a checkpoint's stored config (validated like a user config)."""
    from mlproject.config import from_dict
    from mlproject.model.config import GPTConfig
    from mlproject.model.gpt import GPT

    model_config = dict(model_config)
    window, block = model_config.get("attention_window"), model_config.get("block_size")
    if (model_config.get("attention_pattern") == "alternating" and isinstance(window, int)
            and isinstance(block, int) and window >= block):
        # Written before a band had to bind (the old default window 256 at block_size <= 256):
        # that band masked nothing, so the model it trained is exactly the dense one.
        model_config["attention_pattern"] = "dense"
    return GPT(from_dict(GPTConfig, model_config, source="checkpoint model_config").resolved())


def load_model_checkpoint(path: str | os.PathLike[str],
                          device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the GPT stored in a checkpoint; returns (model in eval mode on `device`, state).

    A checkpoint of the original suite (`<name>.last.pt`) loads too, converted by
    `mlproject.model.original`; its state is then given in our format.
    """
    raw = read_torch_file(path)
    from mlproject.model.original import from_original, is_original_checkpoint

    if is_original_checkpoint(raw):
        model, state = from_original(raw, str(path))
        return model.to(device), state
    state = check_format(raw, path)
    if "model_config" not in state or "model" not in state:
        raise MlprojectError(f"checkpoint {path} holds no model (missing model_config/model)")
    model = build_model(state["model_config"])
    try:
        model.load_state_dict(clean_state_dict(state["model"]))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise MlprojectError(f"checkpoint {path} weights do not match its config: {first}") from None
    return model.to(device).eval(), state
