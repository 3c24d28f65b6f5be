"""Loading a pipeline YAML and checking its step graph: unique ids, known `needs`, no cycles,
and every `{{ steps.<id>.<key> }}` reference to a step that runs before (an ancestor).

Every check fails at load time with a one-line ConfigError naming the file, so a bad pipeline
stops before its first step runs (locally) or before the DAG is built (Airflow).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mlproject.config import from_dict, load_yaml
from mlproject.errors import ConfigError
from mlproject.orchestration.config import Pipeline, PipelineSettings, PipelineStep
from mlproject.orchestration.original_format import (KnownFlags, is_pipeline_file, is_step_file,
                                                     load_original_pipeline, subcommand)


def load_pipeline(path: str | os.PathLike[str], known_flags: KnownFlags | None = None) -> Pipeline:
    """Read and validate a pipeline YAML: sections, step fields, unique ids, needs, cycles.

    A pipeline file of the original suite is read in its own format (`original_format`);
    `known_flags` (the CLI's flags per subcommand) then checks its steps' args at load time."""
    source = str(path)
    data = load_yaml(path)
    if is_pipeline_file(data):
        return load_original_pipeline(data, source, known_flags)
    if is_step_file(data):
        command = subcommand(data["script"], source)
        raise ConfigError(f"{source} is a step config of the original {data['script']}, not a pipeline; "
                          f"run it with `mlproject {command} --config {source}`")
    unknown = set(data) - {"pipeline", "steps"}
    if unknown:
        raise ConfigError(f"{source}: unknown section {sorted(unknown)[0]!r}; allowed sections: pipeline, steps")
    settings = from_dict(PipelineSettings, data.get("pipeline"), source=f"{source}: pipeline")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigError(f"{source}: steps must be a non-empty list of steps")
    steps = []
    for i, raw in enumerate(raw_steps):
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: steps[{i}] must be a mapping with id and entry_point")
        step = from_dict(PipelineStep, raw, source=f"{source}: steps[{i}]")
        if step.experiment_name is None:
            step.experiment_name = settings.experiment_name
        steps.append(step)
    pipeline = Pipeline(settings, steps, source)
    ids = [s.id for s in steps]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"{source}: step id {duplicates[0]!r} is used more than once")
    for step in steps:
        for need in step.needs:
            if need not in ids:
                raise ConfigError(f"{source}: step {step.id} needs unknown step {need!r}; steps: {', '.join(ids)}")
    order = execution_order(pipeline)
    for step in steps:
        ancestors = _ancestors(pipeline, step.id)
        for ref in sorted(step.references()):
            if ref not in ids:
                raise ConfigError(f"{source}: step {step.id} uses the result of unknown step {ref!r}")
            if ref not in ancestors:
                raise ConfigError(f"{source}: step {step.id} uses the result of step {ref} but does not need it; "
                                  f"add {ref} to its needs")
    pipeline.steps = order
    return pipeline


def execution_order(pipeline: Pipeline) -> list[PipelineStep]:
    """The steps in dependency order (file order among independent steps); a cycle is an error."""
    remaining = {s.id: set(s.needs) for s in pipeline.steps}
    order: list[PipelineStep] = []
    while remaining:
        ready = [s for s in pipeline.steps if s.id in remaining and not remaining[s.id]]
        if not ready:
            raise ConfigError(f"{pipeline.source}: steps {', '.join(sorted(remaining))} depend on each other in a cycle")
        for step in ready:
            order.append(step)
            del remaining[step.id]
            for needs in remaining.values():
                needs.discard(step.id)
    return order


def _ancestors(pipeline: Pipeline, step_id: str) -> set[str]:
    seen: set[str] = set()
    stack = list(pipeline.step(step_id).needs)
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(pipeline.step(current).needs)
    return seen
