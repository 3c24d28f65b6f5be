"""Where a pipeline's MLflow project is, so `mlproject pipeline` runs from any directory.

Every step is `mlflow run <project_dir> ...` with `project_dir` "." by default, and its config
parameters (`configs/compare/....yaml`) are relative to the repository. Started elsewhere, MLflow
fails with "no such file" about a path the user never typed. Here the project is found, in
order: `project_dir` under the working directory, above the pipeline file (configs/pipeline/ lives
in the project), or the repository this package was installed from; relative file parameters
that exist only in the project are made absolute. No project anywhere is a one-line error.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mlproject.config import replace
from mlproject.errors import ConfigError
from mlproject.orchestration.config import Pipeline

PROJECT_FILE = "MLproject"


def _candidates(project_dir: str, config_path: Path) -> list[Path]:
    given = Path(project_dir).expanduser()
    if given.is_absolute():
        return [given]
    import mlproject

    package_repo = Path(mlproject.__file__).resolve().parents[2]  # src/mlproject/__init__.py -> repo
    above_config = [parent / given for parent in config_path.resolve().parents]
    return [Path.cwd() / given, *above_config, package_repo / given]


def find_project(project_dir: str, config_path: str | Path) -> Path:
    """The absolute project directory (one holding an MLproject file) for a pipeline file."""
    for candidate in _candidates(project_dir, Path(config_path)):
        if (candidate / PROJECT_FILE).is_file():
            return candidate.resolve()
    raise ConfigError(f"{config_path}: pipeline.project_dir={project_dir!r} has no {PROJECT_FILE} file here "
                      f"({Path.cwd()}), above the pipeline file or in the installed package's repository; "
                      "run from the repository root or set pipeline.project_dir to the repository")


def localize(pipeline: Pipeline) -> Pipeline:
    """The pipeline with an absolute project dir and relative file parameters resolved in it."""
    if pipeline.original is not None:  # an original pipeline: its steps run in its project_root
        return pipeline
    settings = pipeline.settings
    project = find_project(settings.project_dir, pipeline.source)
    here = Path.cwd() / settings.project_dir
    if here.is_dir() and here.resolve() == project:
        return pipeline  # started where the paths already work: commands stay as written
    steps = []
    for step in pipeline.steps:
        params = {}
        for key, value in step.parameters.items():
            if (isinstance(value, str) and "{{" not in value and value and not Path(value).is_absolute()
                    and not Path(value).exists() and (project / value).is_file()):
                value = str(project / value)
            params[key] = value
        steps.append(dataclasses.replace(step, parameters=params))
    return dataclasses.replace(pipeline, settings=replace(settings, project_dir=str(project)),
                               steps=steps)
