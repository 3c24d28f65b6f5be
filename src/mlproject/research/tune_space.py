"""A tune job: the search space and the trial configs it samples, checked before any run.

    search_space:
      train.learning_rate: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
      train.warmup:        {type: int, low: 0, high: 40}
      model.dropout:       {type: float, low: 0.0, high: 0.2}
      train.batch_size:    {type: categorical, choices: [8, 16]}

Any field of the model/data/train sections can be searched. A trial records what ran, not what
was sampled: a value the run changes (a warmup above the trainer's cap of half the run, a
fraction of the run resolved to steps, a max_steps beyond the epochs) is its effective value
(`effective_values`). A dimension whose whole range runs as one value is refused before any
run (`check_collapse`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlproject.app.config import RunConfig
from mlproject.config import dump_yaml, flatten, replace, to_dict
from mlproject.errors import ConfigError
from mlproject.research.config import TuneConfig
from mlproject.research.sweep import load_job, sweep_key
from mlproject.schema import SweepKind

SEARCHABLE = RunConfig.RECIPE  # sections a search space may change
# Warmups searched in steps (`train.warmup` of earlier releases: steps from 1 up): what ran is the
# trainer's capped step count.
WARMUP_STEP_NAMES = {"train.warmup", "train.warmup_steps"}
_TYPES = ("float", "int", "categorical")


@dataclass
class Dimension:
    """One searched field: `section.field` with its distribution."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    def suggest(self, trial: Any) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log, step=self.step)

    def corners(self) -> list[Any]:
        """Values a config is validated at before anything runs."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


def parse_space(raw: Any, source: str) -> list[Dimension]:
    """Validate `search_space: {section.field: {type, low, high, log, step | choices}}`."""
    where = f"{source}: search_space"
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where} must be a non-empty mapping of section.field to a distribution")
    dims = []
    for name, spec in raw.items():
        section, _, fname = str(name).partition(".")
        cls = RunConfig.SECTIONS.get(section)
        if section not in SEARCHABLE or cls is None:
            raise ConfigError(f"{where}.{name}: expected section.field with section one of {', '.join(SEARCHABLE)}")
        fields = {f.name for f in dataclasses.fields(cls)} | set(getattr(cls, "LEGACY_FLAGS", {}))
        if fname not in fields:
            raise ConfigError(f"{where}.{name}: unknown field {fname!r} of section {section}; "
                              f"allowed: {', '.join(sorted(fields))}")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}.{name} must be a mapping with type and low/high or choices")
        unknown = set(spec) - {"type", "low", "high", "log", "step", "choices"}
        if unknown:
            raise ConfigError(f"{where}.{name}: unknown key {sorted(unknown)[0]!r}; "
                              "allowed: type, low, high, log, step, choices")
        dim = Dimension(name=str(name), type=str(spec.get("type", "")), low=spec.get("low"), high=spec.get("high"),
                        log=bool(spec.get("log", False)), step=spec.get("step"), choices=spec.get("choices"))
        if dim.type not in _TYPES:
            raise ConfigError(f"{where}.{name}: type={dim.type!r}; expected one of {', '.join(_TYPES)}")
        if dim.type == "categorical":
            if not isinstance(dim.choices, list) or not dim.choices:
                raise ConfigError(f"{where}.{name}: a categorical needs a non-empty list of choices")
        else:
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (dim.low, dim.high)):
                raise ConfigError(f"{where}.{name}: low and high must be numbers, got {dim.low!r} and {dim.high!r}")
            if not dim.low < dim.high:
                raise ConfigError(f"{where}.{name}: low={dim.low} must be below high={dim.high}")
            if dim.log and dim.low <= 0:
                raise ConfigError(f"{where}.{name}: a log scale needs low > 0, got {dim.low}")
        dims.append(dim)
    return dims


def trial_config(base: RunConfig, values: Mapping[str, Any], *, run_name: str | None = None,
                 experiment: str | None = None, source: str = "trial") -> RunConfig:
    """`base` with the sampled `values` ({section.field: value}), validated like a config file."""
    changes = {section: {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(section + ".")}
               for section in SEARCHABLE}
    if {"warmup", "warmup_steps", "warmup_fraction"} & set(changes["train"]):  # the searched warmup replaces the base's
        changes["train"] = {"warmup_steps": None, "warmup_fraction": None, **changes["train"]}
    tracking = {"run_name": run_name or base.tracking.run_name, "resume_from": None,
                "experiment_name": experiment or base.tracking.experiment_name}
    cfg = base.replace(source=source, tracking=tracking, **{name: c for name, c in changes.items() if c})
    cfg.model.resolved()
    return cfg


def total_steps(cfg: RunConfig, train_tokens: int) -> int:
    """The optimizer steps a single-process run of the resolved `cfg` takes on `train_tokens`
    (the trainer's own count: windows per epoch over batch and accumulation, capped by max_steps)."""
    windows = max(train_tokens - 1, 0) // cfg.model.block_size
    per_epoch = windows // cfg.train.batch_size // cfg.train.grad_accum_steps
    steps = cfg.train.epochs * per_epoch
    return min(steps, cfg.train.max_steps) if cfg.train.max_steps is not None else steps


def effective_values(cfg: RunConfig, names: list[str], data: Any) -> dict[str, tuple[Any, str]]:
    """{name: (the value the run really uses, why it may differ from the sampled one)} for the
    searched `names` of trial config `cfg`: the resolved config's, with the warmup in steps as the
    trainer caps it, and max_steps as the epochs end it."""
    from mlproject.training.optim import resolve_warmup

    resolved = cfg.resolved(data.vocab_size)
    flat = {**flatten(resolved.legacy_sections()), **resolved.flat()}  # train.warmup as well
    steps = total_steps(resolved, len(data.train.tokens))
    out = {name: (flat[name], "the resolved config sets it") for name in names}
    for name in WARMUP_STEP_NAMES & set(out):  # in steps, as the trainer runs it
        out[name] = (resolve_warmup(resolved.train, steps),
                     f"warmup is capped at half of the run's {steps} steps ({steps // 2})")
    if "train.max_steps" in out:
        out["train.max_steps"] = (steps, f"{resolved.train.epochs} epoch(s) end the run at {steps} steps")
    return out


def check_collapse(job: TuneJob, data: Any) -> None:
    """Refuse a dimension whose sampled values all run as one value (a warmup range above the
    cap, say): the search would rank a dimension that had no effect."""
    names = [d.name for d in job.space]
    for dim in job.space:
        corners = dim.corners()
        if len({json.dumps(v) for v in corners}) < 2:
            continue
        ran = [effective_values(trial_config(job.run, {dim.name: v}), names, data)[dim.name] for v in corners]
        if len({json.dumps(value) for value, _ in ran}) == 1:
            shown = f"[{dim.low}, {dim.high}]" if dim.type != "categorical" else f"{dim.choices}"
            raise ConfigError(f"{job.source}: search_space.{dim.name}: every value in {shown} runs as {ran[0][0]} "
                              f"({ran[0][1]}); widen the range below the cap or drop the dimension")


@dataclass
class TuneJob:
    run: RunConfig
    tune: TuneConfig
    space: list[Dimension]
    space_raw: dict[str, Any]
    source: str = "flags"

    @classmethod
    def load(cls, yaml_path: str | os.PathLike[str] | None = None, args: Any = None) -> TuneJob:
        """From a YAML file (model/data/train/tracking/tune/search_space) with flags overriding it;
        the space is checked at its bounds and choices before any run exists."""
        run, tune, extras = load_job(yaml_path, args, "tune", TuneConfig, extra_keys=("search_space",))
        source = str(yaml_path) if yaml_path else "flags"
        space = parse_space(extras.get("search_space"), source)
        for dim in space:
            for value in dim.corners():
                trial_config(run, {dim.name: value}, source=f"{source}: search_space.{dim.name}={value!r}")
        return cls(run, tune, space, dict(extras["search_space"]), source)

    @property
    def experiment(self) -> str:
        return self.run.experiment_for(SweepKind.TUNE)

    @property
    def key(self) -> str:
        """What makes two searches one study: config, space, metric and experiment (not the
        trial budget or the worker count, so a re-run with more trials continues it)."""
        return sweep_key("tune", self.run, drop=[d.name for d in self.space],
                         # the experiment as named before tune had its own default (gpt-<dataset>): the
                         # studies made then keep their names, and continue
                         extra={"space": self.space_raw, "metric": self.tune.metric,
                                "experiment": self.run.experiment_name})

    @property
    def study_name(self) -> str:
        return self.tune.study_name or f"tune-{self.key}"

    def config_text(self, **tune_changes: Any) -> str:
        sections = self.run.sections()
        tune = to_dict(replace(self.tune, **tune_changes))
        return dump_yaml({**sections, "tune": tune, "search_space": self.space_raw})
