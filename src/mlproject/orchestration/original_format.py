"""The original suite's config files, read as written: the one place that converts them.

A step file names a script and its flags (dashed names, as its argparse spelled them):

    name: gpt2_vs_gpt3_small_fair      # ignored
    script: scripts/compare_models.py
    args: {models: [gpt2, gpt3], seeds: [42, 43], val-checking: true, amp: false}

It becomes one `mlproject` subcommand and its arguments by the original's own rules: each arg is
`--key value`; null and false are left out (`amp: false` means no `--amp`), true is the bare
flag, a list is the flag followed by each item. `--profile original` is appended, so the
original's defaults apply; flags typed after `--config` on the command line still win.

A pipeline file (`name`, `project_root`, `run_dir`, `env`, `steps`) becomes the suite's
`Pipeline`: every step (a `config:` step file, or an inline `script` + `args`) runs its
subcommand with those arguments in `project_root`, after the step before it. Besides the
suite's own report, each execution writes the original's `<run_dir>/execution_<UTC stamp>.json`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlproject.config import load_yaml
from mlproject.errors import ConfigError
from mlproject.io import atomic_write_text
from mlproject.orchestration.config import Pipeline, PipelineSettings, PipelineStep

# script file name -> `mlproject` subcommand
SCRIPTS = {"train.py": "train", "compare_models.py": "compare", "run_ablations.py": "ablate",
           "plot_results.py": "plot", "generate.py": "generate"}
ENTRY_POINTS = {"train": "train", "compare": "compare", "ablate": "ablation", "plot": "plot", "generate": "generate"}
PROFILE_ARGS = ("--profile", "original")
PIPELINE_KEYS = ("name", "project_root", "run_dir", "env", "steps")

KnownFlags = Callable[[str], Collection[str]]  # subcommand -> every flag spelling it accepts


def is_step_file(data: Mapping[str, Any]) -> bool:
    """A step config of the original suite: a top-level `script` (the suite's files have sections)."""
    return "script" in data


def is_pipeline_file(data: Mapping[str, Any]) -> bool:
    """A pipeline of the original suite: `steps` without the suite's `pipeline:` section."""
    steps = data.get("steps")
    return "pipeline" not in data and isinstance(steps, list) and not any(
        isinstance(s, Mapping) and "entry_point" in s for s in steps)


def subcommand(script: Any, source: str) -> str:
    """The subcommand of an original script path (`scripts/train.py` -> `train`)."""
    name = Path(str(script)).name
    if not isinstance(script, str) or name not in SCRIPTS:
        expected = ", ".join(f"scripts/{s}" for s in SCRIPTS)
        raise ConfigError(f"{source}: unknown script {script!r}; expected one of {expected}")
    return SCRIPTS[name]


def args_argv(args: Mapping[str, Any] | None, source: str) -> list[str]:
    """The original's rules: `--key value`; null and false left out; true bare; a list, each item."""
    if args is None:
        return []
    if not isinstance(args, Mapping):
        raise ConfigError(f"{source}: args must be a mapping of flag names to values, got {type(args).__name__}")
    argv: list[str] = []
    for key, value in args.items():
        flag = f"--{key}"
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, *(str(item) for item in value)]
        elif isinstance(value, Mapping):
            raise ConfigError(f"{source}: args.{key} is a mapping; expected a value, a list or true/false")
        else:
            argv += [flag, str(value)]
    return argv


def check_flags(command: str, args: Mapping[str, Any] | None, known: Collection[str], source: str) -> None:
    """Every key of `args` is a flag of `mlproject <command>`, or a one-line error naming it."""
    for key in args or {}:
        if f"--{key}" not in known:
            close = difflib.get_close_matches(f"--{key}", sorted(known), n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{source}: unknown key args.{key}: `mlproject {command}` has no flag --{key}{hint}; "
                              f"see `mlproject {command} --help`")


def step_argv(data: Mapping[str, Any], source: str, known_flags: KnownFlags | None = None) -> tuple[str, list[str]]:
    """(subcommand, arguments) of an original step (a step file's mapping or an inline step)."""
    command = subcommand(data.get("script"), source)
    args = data.get("args")
    argv = args_argv(args, source)
    if known_flags is not None:
        check_flags(command, args, known_flags(command), source)
    return command, [*argv, *PROFILE_ARGS]


def _config_path(argv: Sequence[str]) -> tuple[int, int, str] | None:
    """(start, end, path) of `--config PATH` / `--config=PATH` in `argv`, or None."""
    for i, token in enumerate(argv):
        if token == "--config" and i + 1 < len(argv):
            return i, i + 2, argv[i + 1]
        if token.startswith("--config="):
            return i, i + 1, token.removeprefix("--config=")
    return None


def expand_cli_argv(argv: Sequence[str], known_flags: KnownFlags) -> list[str]:
    """`<command> --config <original step file> [flags]` as `<command> <file's flags> --profile
    original [flags]`: the flags typed on the command line come last, so they override the file.
    Any other argv comes back unchanged."""
    found = _config_path(argv)
    if not argv or found is None or not Path(found[2]).is_file():
        return list(argv)
    start, end, path = found
    try:
        data = load_yaml(path)
    except ConfigError:  # not readable YAML: the command's own loading reports it, as for any config
        return list(argv)
    if not is_step_file(data):
        return list(argv)
    command = subcommand(data.get("script"), path)
    if argv[0] != command:
        raise ConfigError(f"{path} is a config of the original {data['script']}, which is `mlproject {command}`; "
                          f"run `mlproject {command} --config {path}` (not {argv[0]})")
    _, file_argv = step_argv(data, path, known_flags)
    return [command, *file_argv, *argv[1:start], *argv[end:]]


# ----------------------------------------------------------------------------- pipelines

@dataclass
class OriginalStep(PipelineStep):
    """A step of an original pipeline: `mlproject <command> <argv>` run in the project root.

    Its `needs` (the step before it) order the steps; they do not block one: as in the original,
    `--continue-on-error` runs the steps after a failed one."""

    command: str = ""
    argv: list[str] = dataclasses.field(default_factory=list)

    def blocking_needs(self) -> list[str]:
        return []


@dataclass
class OriginalPipeline:
    """What the original's own report records about a pipeline file."""

    config: str        # the pipeline file, absolute
    project_root: str  # absolute: where every step runs
    run_dir: str       # absolute: where the reports go
    name: str


def load_original_pipeline(data: Mapping[str, Any], source: str,
                           known_flags: KnownFlags | None = None) -> Pipeline:
    """An original pipeline mapping as the suite's `Pipeline` (steps in file order)."""
    unknown = sorted(set(map(str, data)) - set(PIPELINE_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} of an original pipeline; "
                          f"allowed keys: {', '.join(PIPELINE_KEYS)}")
    name = str(data.get("name", "pipeline_run"))
    raw_root = data.get("project_root")
    project_root = (Path.cwd() / str(raw_root if raw_root is not None else ".")).resolve()
    run_dir = _resolve(data.get("run_dir", f"research_runs/pipeline/{name}"), project_root)
    env = data.get("env") or {}
    if not isinstance(env, Mapping):
        raise ConfigError(f"{source}: env must be a mapping of variable names to values")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigError(f"{source}: steps must be a non-empty list of steps")
    steps: list[PipelineStep] = []
    previous: str | None = None
    for i, raw in enumerate(raw_steps):
        step = _original_step(raw, i, project_root, f"{source}: steps[{i}]", known_flags)
        if previous is not None:
            step.needs = [previous]
        if step.enabled:
            previous = step.id
        steps.append(step)
    ids = [s.id for s in steps]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"{source}: step id {duplicates[0]!r} is used more than once")
    settings = PipelineSettings(name=name, run_dir=str(run_dir), project_dir=str(project_root),
                                env={str(k): str(v) for k, v in env.items()})
    settings.validate()
    original = OriginalPipeline(str(Path(source).resolve()), str(project_root), str(run_dir), name)
    return Pipeline(settings, steps, source, original=original)


def _resolve(value: Any, base: Path) -> Path:
    path = Path(str(value))
    return path if path.is_absolute() else (base / path).resolve()


def _original_step(raw: Any, index: int, project_root: Path, source: str,
                   known_flags: KnownFlags | None) -> OriginalStep:
    """One step: its `config:` step file (relative to the project root) or its inline script + args."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: must be a mapping with id and config (or script and args)")
    step_id = str(raw.get("id") or "unnamed")
    enabled = raw.get("enabled", True)
    if "config" in raw:
        path = _resolve(raw["config"], project_root)
        payload: Mapping[str, Any] = load_yaml(path)
        where = str(path)
        if not is_step_file(payload):
            raise ConfigError(f"{path}: step {step_id}'s config has no 'script'; expected an original step config")
    elif "script" in raw:
        payload, where = raw, f"{source} (step {step_id})"
    else:
        raise ConfigError(f"{source}: step {step_id} needs 'config' or 'script'")
    command, argv = step_argv(payload, where, known_flags)
    step = OriginalStep(id=step_id, entry_point=ENTRY_POINTS[command], enabled=bool(enabled),
                        command=command, argv=argv)
    step.validate()
    return step


# ----------------------------------------------------------------------------- the original's report

_ORIGINAL_STATUS = {"succeeded": "ok", "reused": "ok", "failed": "failed", "dry_run": "dry_run"}


def _stamp(iso: str | None) -> str | None:
    """An ISO time in the original's spelling (UTC, `Z`)."""
    return iso.replace("+00:00", "Z") if iso else iso


def original_results(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The original's `results`, from the suite's report steps (`id`, `status`, `command`, times,
    `return_code`; status `dry_run` for a step a dry run printed).

    A disabled step is `skipped`; a step that did not run because an earlier one failed, or was
    not selected, is left out (the original stopped there, or filtered it)."""
    out = []
    for s in steps:
        entry = {"step_id": s["id"], "command": list(s.get("command") or []), "returncode": s.get("return_code"),
                 "status": _ORIGINAL_STATUS.get(s["status"]), "started_at": _stamp(s.get("started_at")),
                 "finished_at": _stamp(s.get("ended_at"))}
        if s["status"] == "skipped" and s.get("reason") == "disabled":
            entry.update(command=[], returncode=None, status="skipped", started_at=None, finished_at=None)
        elif s["status"] == "reused":
            entry.update(returncode=0)
        if entry["status"] is not None:
            out.append(entry)
    return out


def write_original_report(original: OriginalPipeline, results: list[dict[str, Any]], dry_run: bool) -> Path:
    """`<run_dir>/execution_<UTC %Y%m%d_%H%M%S>.json` with exactly the original's keys."""
    payload = {"pipeline_config": original.config, "project_root": original.project_root,
               "run_dir": original.run_dir, "run_name": original.name, "dry_run": dry_run, "results": results,
               "finished_at": _stamp(datetime.now(timezone.utc).isoformat())}
    path = Path(original.run_dir) / f"execution_{datetime.now(timezone.utc).strftime('%Y%m%d_%H%M%S')}.json"
    os.makedirs(path.parent, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path
