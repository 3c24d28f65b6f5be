"""Configs of a pipeline: the YAML schema (the `pipeline:` section and its `steps:`) and the
options of the `mlproject pipeline` command.

    pipeline: {name: research_small_repro_offline, experiment_name: gpt2_vs_gpt3_offline}
    steps:
      - id: compare
        entry_point: compare
        parameters: {config: configs/compare/gpt2_vs_gpt3_small_fair_offline.yaml}
      - id: plot_compare
        entry_point: plot
        needs: [compare]
        parameters: {parent_run_id: "{{ steps.compare.run_id }}"}

A parameter `{{ steps.<id>.<key> }}` is replaced by the `<key>` of step `<id>`'s result when the
step's command is built (`orchestration.steps`); a file is loaded and checked in
`orchestration.graph`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlproject.config import check_types, field
from mlproject.errors import ConfigError
from mlproject.data.config import default_cache_dir
from mlproject.outdir import in_project_run, local_folder

if TYPE_CHECKING:  # original_format builds on this module
    from mlproject.orchestration.original_format import OriginalPipeline

TEMPLATE = re.compile(r"\{\{\s*steps\.([A-Za-z0-9_\-]+)\.([A-Za-z0-9_]+)\s*\}\}")  # {{ steps.<id>.<key> }}
_ID = re.compile(r"^[A-Za-z0-9_\-]+$")
REPORTS_DIR = "pipeline_runs"  # under the local folder (outdir.local_root)
LEGACY_REPORTS_DIR = "outputs/pipeline_runs"  # where reports went before: still read for --resume


def param_text(value: Any) -> str:
    """A parameter value as `mlflow run -P` passes it: lists space-joined, booleans lower-case."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return " ".join(param_text(v) for v in value)
    return str(value)


@dataclass
class PipelineStep:
    """One step: an MLproject entry point with parameters, run after the steps it needs."""

    id: str = field(help="step id (letters, digits, _ and -)")
    entry_point: Literal["train", "compare", "ablation", "ladder", "plot", "generate", "evaluate"] = field(
        help="MLproject entry point the step runs")
    needs: list[str] = field(default_factory=list, help="ids of steps that must succeed first")
    enabled: bool = field(True, help="false keeps the step in the file without running it")
    parameters: dict = field(default_factory=dict, help="-P key=value parameters; lists are space-joined; "
                                                        "'{{ steps.<id>.<key> }}' is an upstream step's result")
    experiment_name: str | None = field(None, help="MLflow experiment of the step (default: the pipeline's)")

    def validate(self) -> None:
        check_types(self, source=f"step {self.id}")
        if not _ID.match(self.id):
            raise ConfigError(f"step id {self.id!r} must contain only letters, digits, _ and -")

    def blocking_needs(self) -> list[str]:
        """The needs whose failure skips this step (all of them; see `original_format.OriginalStep`)."""
        return self.needs

    def references(self) -> set[str]:
        """Ids of the steps whose results the parameters use."""
        return {m.group(1) for v in self.parameters.values() for m in TEMPLATE.finditer(param_text(v))}


@dataclass
class PipelineSettings:
    """The `pipeline:` section."""

    name: str = field(help="pipeline name (report folder prefix, pipeline run name)")
    experiment_name: str | None = field(None, help="default MLflow experiment of every step and of the pipeline run")
    run_dir: str | None = field(None, help="where execution reports are written (default: pipeline_runs/ under "
                                           "$MLPROJECT_LOCAL_DIR or ./mlproject-outputs)")
    project_dir: str = field(".", help="MLflow project the steps run (`mlflow run <project_dir>`)")
    env: dict = field(default_factory=dict, help="extra environment variables of every step")

    def reports_dirs(self) -> list[Path]:
        """Where this pipeline's execution reports are written (the first), and read for --resume.

        With no run_dir: the local folder's pipeline_runs/, or under `mlflow run -e pipeline`
        (which works in the project) the cache's; either reads the other's reports too, and those
        an earlier release wrote to outputs/pipeline_runs."""
        if self.run_dir:
            return [Path(self.run_dir).expanduser()]
        # the cache is shared: one folder per project, so a --resume never reuses another project's steps
        project = hashlib.sha256(str(Path.cwd().resolve()).encode()).hexdigest()[:12]
        cache = Path(default_cache_dir()) / REPORTS_DIR / project
        local = local_folder(None, "run_dir", REPORTS_DIR)[0]
        return ([cache, local] if in_project_run() else [local, cache]) + [Path(LEGACY_REPORTS_DIR)]

    def validate(self) -> None:
        check_types(self, source="pipeline")
        if not _ID.match(self.name):
            raise ConfigError(f"pipeline: name={self.name!r} must contain only letters, digits, _ and -")


@dataclass
class Pipeline:
    """A loaded pipeline file: its settings and its steps (in dependency order once loaded)."""

    settings: PipelineSettings
    steps: list[PipelineStep]
    source: str = ""
    # an original-format file (`original_format.OriginalPipeline`): its steps run in its project
    # root and its own report is written beside the suite's
    original: OriginalPipeline | None = None

    def step(self, step_id: str) -> PipelineStep:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise ConfigError(f"{self.source}: no step {step_id!r}; steps: {', '.join(s.id for s in self.steps)}")


@dataclass
class PipelineOptions:
    """Options of `mlproject pipeline` (the field names are its flags)."""

    config: str = field(help="pipeline YAML (configs/pipeline/)")
    step: list[str] = field(default_factory=list, repeat=True,
                            help="run only these step ids (space- or comma-separated; default: every enabled step)")
    dry_run: bool = field(False, help="print the commands only")
    continue_on_error: bool = field(False, help="run independent steps after a failure")
    resume: bool = field(False, help="skip steps that finished in the last report")

    def validate(self) -> None:
        check_types(self, source="pipeline")
        if not str(self.config).strip():
            raise ConfigError("pipeline: config='' is not a valid value; expected a pipeline YAML (configs/pipeline/)")

    def selected_steps(self) -> set[str]:
        """The step ids of `step`, each item split on spaces and commas (`-P step="a b"`)."""
        return {s for item in self.step for s in item.replace(",", " ").split()}
