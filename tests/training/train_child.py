"""A training process for the resume, signal and DDP tests: `python train_child.py SPEC_JSON`.

SPEC: {"cache_dir", "checkpoint_dir", "model": {GPTConfig fields}, "data": {DataConfig fields},
"train": {TrainConfig and RuntimeConfig fields}, "resume_from": path|null,
"block_at_checkpoint": step|null (print CHECKPOINT and hang after writing last.pt at that step,
so the parent can SIGKILL), "marker_at_log": step|null (print LOGGED at that step)}.
Prints `RESULT {json}` at the end: status, step, summary, the logged losses and which callbacks ran.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from mlproject.config import from_dict
from mlproject.data.config import DataConfig, DataRuntimeConfig
from mlproject.data.prepare import prepare_data
from mlproject.model.config import GPTConfig
from mlproject.training.config import RuntimeConfig, TrainConfig
from mlproject.training.resolve import resolve
from mlproject.training.trainer import TrainerCallback, train

class Recorder(TrainerCallback):
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.losses: dict[int, float] = {}
        self.val: dict[int, float] = {}
        self.events: list[str] = []

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self.losses[step] = metrics["train_loss"]
        if self.spec.get("marker_at_log") == step:
            print("LOGGED", step, flush=True)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.val[step] = metrics["val_loss"]

    def on_checkpoint(self, path: Path, kind: str, step: int) -> None:
        self.events.append(f"checkpoint:{kind}:{step}")
        if kind == "last" and self.spec.get("block_at_checkpoint") == step:
            print("CHECKPOINT", step, flush=True)
            time.sleep(600)  # the parent kills this process now

    def on_train_end(self, result) -> None:
        self.events.append(f"end:{result.status}")


def main() -> None:
    spec = json.loads(sys.argv[1])
    data = prepare_data(DataConfig(**spec["data"]), DataRuntimeConfig(cache_dir=spec["cache_dir"]))
    recorder = Recorder(spec)
    runtime_fields = {f.name for f in dataclasses.fields(RuntimeConfig)}
    runtime = from_dict(RuntimeConfig, {k: v for k, v in spec["train"].items() if k in runtime_fields})
    train_cfg = from_dict(TrainConfig, {k: v for k, v in spec["train"].items() if k not in runtime_fields})
    model_cfg, train_cfg = resolve(GPTConfig(**spec["model"]), train_cfg, data.vocab_size)
    result = train(model_cfg, data, train_cfg, runtime=runtime, checkpoint_dir=Path(spec["checkpoint_dir"]), callbacks=[recorder],
                   resume_from=Path(spec["resume_from"]) if spec.get("resume_from") else None)
    print("RESULT " + json.dumps({"status": result.status, "step": result.step, "summary": result.summary,
                                  "losses": recorder.losses, "val": recorder.val, "events": recorder.events}),
          flush=True)


if __name__ == "__main__":
    main()
