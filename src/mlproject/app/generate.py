"""`run_generate`: text from a run, a `models:/` URI or a checkpoint.

The model's config always comes from its checkpoint (a model cannot be rebuilt with other
sizes than it was trained with); size flags are only checked against it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mlproject.app.model_source import ModelRef, load_source, resolve_source
from mlproject.app.tracker import ModelStore
from mlproject.errors import ConfigError, MlprojectError
from mlproject.inference.config import GenerateConfig

# The architecture flags of the original's generate.py (dropout aside: generation runs without it).
ARCHITECTURE_FIELDS = ("model_version", "block_size", "n_layer", "n_head", "d_model", "norm_eps", "mlp_expansion",
                       "norm_type", "mlp_type", "pos_encoding", "attention_impl", "rope_theta")


def check_sizes(cfg: GenerateConfig, model_config: Any) -> None:
    """An architecture flag that disagrees with the checkpoint's config is a one-line error naming both."""
    for name in ARCHITECTURE_FIELDS:
        wanted, actual = getattr(cfg, name), getattr(model_config, name)
        if wanted not in (None, "") and wanted != actual:
            raise ConfigError(f"generate: {name}={wanted} does not match the checkpoint's {name}={actual}; "
                              "the model config always comes from the checkpoint (drop the flag)")


def check_vocab(tokenizer_size: int, model_size: int, tokenizer_name: str) -> None:
    """The tokenizer must be the one the model was trained with: as large as the embedding, but
    for the rows training pads it with (up to a multiple of VOCAB_MULTIPLE). A smaller one decodes
    the model's ids as other words, with no error: garbage that looks like a weak model."""
    from mlproject.training.resolve import VOCAB_MULTIPLE

    if tokenizer_size > model_size:
        raise MlprojectError(f"tokenizer {tokenizer_name} has {tokenizer_size} tokens but the model only "
                             f"{model_size}; they are not from the same run")
    if model_size - tokenizer_size >= VOCAB_MULTIPLE:
        raise MlprojectError(f"tokenizer {tokenizer_name} has {tokenizer_size} tokens but the model's vocabulary "
                             f"is {model_size} (at most {VOCAB_MULTIPLE - 1} padding rows expected); give the "
                             "tokenizer the model was trained with")


def run_generate(cfg: GenerateConfig, store: ModelStore | None = None) -> list[str]:
    """Load the model and tokenizer `cfg` names (through `store` unless it is a local
    checkpoint), generate from its prompts, print, record and return the texts."""
    from mlproject.data.tokenizer import load_tokenizer, special_ids
    from mlproject.inference.generate import generate_text
    from mlproject.training.device import select_device

    device = select_device(cfg.device)
    ref = ModelRef(cfg.run_id, cfg.model_uri, cfg.checkpoint, cfg.tokenizer_path)
    with tempfile.TemporaryDirectory(prefix="mlproject-generate-") as tmp:
        source = resolve_source(ref, Path(tmp), store, command="generate")
        model, _ = load_source(source, device)
        check_sizes(cfg, model.config)
        tokenizer = load_tokenizer(source.tokenizer)
    check_vocab(tokenizer.get_vocab_size(), model.config.vocab_size, source.tokenizer.name)
    eot_id, _ = special_ids(tokenizer)
    texts = generate_text(model, tokenizer, cfg, eot_id)
    if store is not None:
        store.record_generations(cfg, texts)
    return texts
