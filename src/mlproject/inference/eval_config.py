"""Configs of `mlproject evaluate` and `mlproject export-hf`: which model, which data, where to log."""

from __future__ import annotations

import re
from pathlib import Path
from dataclasses import dataclass
from typing import Literal

from mlproject.config import check_types, field
from mlproject.errors import ConfigError
from mlproject.outdir import local_folder

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _one_source(section: str, run_id: str | None, model_uri: str | None, checkpoint: str | None) -> None:
    sources = [s for s in (run_id, model_uri, checkpoint) if s]
    if len(sources) != 1:
        raise ConfigError(f"{section}: give exactly one of --run-id, --model-uri, --checkpoint "
                          f"(got {len(sources)})")


@dataclass
class EvaluateConfig:
    """Evaluate a run, a `models:/` URI or a checkpoint on datasets, with a fixed token budget."""

    run_id: str | None = field(None, help="MLflow run whose best (else last) checkpoint to evaluate")
    model_uri: str | None = field(None, help="a models:/ URI (LoggedModel or registered model version)")
    checkpoint: str | None = field(None, help="a local checkpoint file (with --tokenizer-path)")
    tokenizer_path: str | None = field(None, help="tokenizer.json (with --checkpoint)")
    datasets: list[str] = field(default_factory=list, aliases=("--eval-datasets", "--dataset"),
                                help="registry keys to evaluate on (default: the run's own dataset)")
    split: Literal["val", "train", "all"] = field("val", help="split of the registry datasets: val, train, or all "
                                                              "(every document; local files are always read whole)")
    local_path: str | None = field(None, help="local JSONL/text files to evaluate on as one more dataset")
    local_format: Literal["json", "text"] | None = field(
        None, help="json or text (default: $LOCAL_TEXT_DATA_FORMAT or json)")
    local_name: str | None = field(None, help="metric name of the local files (default: the first file's stem)")
    max_tokens: int = field(65536, help="token budget per dataset: the first max_tokens target tokens of the split")
    block_size: int | None = field(None, help="evaluation context (default: the model's block_size)")
    batch_size: int = field(8, help="windows per evaluation batch (intervals are over batches)")
    max_docs: int | None = field(None, help="cap on documents read per split")
    cache_dir: str | None = field(None, help="data cache root (default: $MLPROJECT_CACHE_DIR)")
    device: str = field("auto", help="auto, cpu, cuda, mps")
    new_run: bool = field(False, help="log to a new run tagged with the evaluated run instead of to it")
    experiment_name: str | None = field(None, help="experiment of a new evaluation run")
    expected_sha256: str | None = field(None, help="refuse to evaluate a checkpoint with another sha256")
    tasks: list[str] = field(default_factory=list, help="lm-evaluation-harness tasks (needs the `eval` extra)")
    task_dir: str | None = field(None, help="folder of custom lm-eval task YAMLs (lm_eval --include_path)")
    num_fewshot: int | None = field(None, help="lm-eval few-shot examples")
    limit: int | None = field(None, help="lm-eval: at most this many examples per task")
    allow_custom_code: bool = field(
        False, help="lm-eval: a model no built-in transformers class holds runs as the suite's own model code "
                    "(trust_remote_code=True), as export-hf --allow-custom-code writes it")
    log_to_mlflow: bool = field(True, help="false: print the metrics only")

    def validate(self) -> None:
        check_types(self, source="evaluate")
        _one_source("evaluate", self.run_id, self.model_uri, self.checkpoint)
        for name in ("max_tokens", "batch_size", "block_size", "max_docs", "limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"evaluate: {name}={value} must be positive")
        if self.expected_sha256 is not None and not _SHA256.match(self.expected_sha256):
            raise ConfigError(f"evaluate: expected_sha256={self.expected_sha256!r} is not a sha256; "
                              "expected 64 lowercase hex digits")


@dataclass
class ExportConfig:
    """Export a run's or a checkpoint's model to a Hugging Face transformers folder."""

    run_id: str | None = field(None, help="MLflow run whose best (else last) checkpoint to export")
    model_uri: str | None = field(None, help="a models:/ URI (LoggedModel or registered model version)")
    checkpoint: str | None = field(None, help="a local checkpoint file (with --tokenizer-path)")
    tokenizer_path: str | None = field(None, help="tokenizer.json (with --checkpoint)")
    output: str | None = field(None, help="folder to write (config.json, model.safetensors, tokenizer); default: "
                                          "hf/ under $MLPROJECT_LOCAL_DIR or ./mlproject-outputs")
    log_to_run: bool = field(True, help="log the folder to the run as the artifact folder hf/")
    log_transformers: bool = field(False, help="also log it as an MLflow transformers-flavor model")
    allow_custom_code: bool = field(
        False, help="for a model no built-in transformers class holds, write the suite's own model code into the "
                    "folder (loaded with trust_remote_code=True: loading it runs that code)")

    def validate(self) -> None:
        check_types(self, source="export-hf")
        _one_source("export-hf", self.run_id, self.model_uri, self.checkpoint)
        if self.output is not None and (not self.output.strip() or Path(self.output).name in ("", ".", "..")):
            # the folder is written beside itself and renamed into place: it needs a name of its own
            raise ConfigError(f"export-hf: output={self.output!r} names no folder; expected a folder path "
                              "such as exports/hf")

    def folder(self) -> Path:
        """The folder to write: `output`, else hf/ in the suite's local folder."""
        return local_folder(self.output, "output", "hf")[0]
