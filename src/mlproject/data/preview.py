"""`mlproject dataloaders`: prepare a dataset and show what the trainer will be fed."""

from __future__ import annotations

import torch

from mlproject.data.batches import WindowSampler, get_batch
from mlproject.data.config import DataConfig, DataRuntimeConfig
from mlproject.data.prepare import Log, prepare_data

_PREVIEW_CHARS = 400


def preview_batches(cfg: DataConfig, block_size: int, batch_size: int, num_batches: int, seed: int, *,
                    runtime: DataRuntimeConfig | None = None, log: Log = print) -> None:
    """Print the corpus summary, then shapes, token counts and the decoded first example of batches."""
    data = prepare_data(cfg, runtime, log=log)
    info = data.info
    log(f"dataset {info['dataset']} ({info['source']}), val split {info['val_split']}")
    log(f"tokenizer {data.tokenizer_path} (hash {info['tokenizer_hash']}): vocab {data.vocab_size}, "
        f"eot {data.eot_id}, pad {data.pad_id}")
    for split, cache in (("train", data.train), ("val", data.val)):
        log(f"{split}: {len(cache):,} tokens ({cache.tokens.dtype}), {cache.num_docs:,} documents, "
            f"{len(cache) / max(cache.num_docs, 1):.0f} tokens/document")
    sampler = WindowSampler(len(data.train), block_size, batch_size, seed)
    log(f"train windows of {block_size}+1 tokens: {sampler.num_windows:,}; "
        f"{sampler.steps_per_epoch:,} batches of {batch_size} per epoch")
    for i, starts in zip(range(num_batches), sampler):
        x, y = get_batch(data.train.tokens, starts, block_size)
        aligned = bool(torch.equal(x[:, 1:], y[:, :-1]))
        docs = int((x == data.eot_id).sum())
        log(f"batch {i}: x {tuple(x.shape)} y {tuple(y.shape)} {x.dtype}, {x.numel():,} tokens, "
            f"{docs} document boundaries, targets shifted by one: {aligned}, starts {starts[:4].tolist()}")
        text = data.tokenizer.decode(x[0].tolist(), skip_special_tokens=False)
        shown = text[:_PREVIEW_CHARS] + (" [...]" if len(text) > _PREVIEW_CHARS else "")
        log("  example 0: " + repr(shown))
