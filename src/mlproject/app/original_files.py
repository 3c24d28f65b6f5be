"""The original suite's files of a training run, written in the original profile (or when named).

Its `train.py` wrote, under `--output-dir`:

    <run>_config.json     its flags as one flat JSON object   (--config-path)
    <run>_history.pt      the history dict                    (--history-path)
    <ckpt-name>           the best checkpoint (default <run>.pt)
    <ckpt-name stem>.last.pt

Here the history comes from the run's own logs (`HistoryRecorder`): plain lists and numbers, so
`torch.load(path, weights_only=True)` reads it. The checkpoints are copies of the run's, in this
suite's format (what `generate --checkpoint` reads). The MLflow run stays the source of truth.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from mlproject.app.config import RunConfig
from mlproject.io import atomic_path, atomic_write_text
from mlproject.profiles import ORIGINAL_FLAGS
from mlproject.training.trainer import TrainerCallback


def wants_original_files(cfg: RunConfig) -> bool:
    """In the original profile, or when one of its file names is given."""
    t = cfg.tracking
    return t.profile == "original" or any((t.ckpt_name, t.history_path, t.config_path))


class HistoryRecorder(TrainerCallback):
    """The original's history: train_loss/train_ppl per log, val_loss/val_ppl/val_tok_acc (%) per
    evaluation, with the steps they were taken at (the original's were per epoch)."""

    def __init__(self) -> None:
        self.history: dict[str, Any] = {k: [] for k in ("train_loss", "val_loss", "train_ppl", "val_ppl",
                                                         "train_tok_acc", "val_tok_acc", "train_step", "val_step")}
        self.history["max_steps"] = None

    def on_train_start(self, info: dict) -> None:
        self.history["max_steps"] = int(info["total_steps"])

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        loss = float(metrics["train_loss"])
        self.history["train_loss"].append(loss)
        self.history["train_ppl"].append(math.exp(min(loss, 700.0)))
        self.history["train_step"].append(int(step))

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.history["val_loss"].append(float(metrics["val_loss"]))
        self.history["val_ppl"].append(float(metrics["val_ppl"]))
        self.history["val_tok_acc"].append(100.0 * float(metrics.get("val_token_acc", math.nan)))
        self.history["val_step"].append(int(step))

    def on_train_end(self, result: Any) -> None:
        self.history["global_steps"] = int(result.step)


def original_run_config(cfg: RunConfig, run_name: str) -> dict[str, Any]:
    """The run's config under the original's flag names (`--base-lr` -> base_lr), beside this
    suite's full resolved sections (`mlproject`)."""
    sections = cfg.sections()
    out: dict[str, Any] = {"run_name": run_name}
    for flag in ORIGINAL_FLAGS:
        if "train" not in flag.scripts.split(", ") or "/" in flag.field or "." not in flag.field:
            continue
        section, name = flag.field.split(".")
        if section in sections and name in sections[section]:
            out[flag.flag.lstrip("-").replace("-", "_")] = sections[section][name]
    out["mlproject"] = sections
    return out


def _names(cfg: RunConfig, run_name: str) -> dict[str, Path]:
    from mlproject.outdir import local_root

    t = cfg.tracking
    out = Path(t.output_dir) if t.output_dir else local_root(t.profile)
    ckpt = out / (t.ckpt_name or f"{run_name}.pt")
    return {"config": Path(t.config_path) if t.config_path else out / f"{run_name}_config.json",
            "history": Path(t.history_path) if t.history_path else out / f"{run_name}_history.pt",
            "best": ckpt, "last": ckpt.with_name(f"{ckpt.stem}.last.pt")}


def write_original_files(cfg: RunConfig, run_name: str, history: dict[str, Any], *, last: Path | None,
                         best: Path | None) -> dict[str, Path]:
    """Write the original's files of a finished run (`cfg` resolved); print and return their paths."""
    import torch

    paths = _names(cfg, run_name)
    written = {"config": atomic_write_text(paths["config"], json.dumps(original_run_config(cfg, run_name),
                                                                       indent=2, default=str))}
    with atomic_path(paths["history"]) as tmp:
        torch.save(history, tmp)
    written["history"] = paths["history"]
    for kind, src in (("best", best), ("last", last)):
        if src is not None and Path(src).is_file() and Path(src).resolve() != paths[kind].resolve():
            with atomic_path(paths[kind]) as tmp:
                shutil.copyfile(src, tmp)
            written[kind] = paths[kind]
    print("original suite's files: " + ", ".join(f"{k}={p}" for k, p in written.items()), flush=True)
    return written
