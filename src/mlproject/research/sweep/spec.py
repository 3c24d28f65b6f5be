"""What a sweep runs: its groups, one resolved config per child, and the sweep key.

A job (research/compare.py, research/ablation.py, research/ladder.py) turns its config into a
`SweepSpec`; every child config is validated before the parent or any child run exists. The
sweep key is what a `--resume` matches: two sweeps with the same key are the same sweep.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlproject.app.config import RunConfig
from mlproject.config import build_sections, load_yaml, replace
from mlproject.errors import ConfigError
from mlproject.profiles import command_defaults

if TYPE_CHECKING:  # the MLflow adapters are imported when a sweep runs, not when a job is built
    from mlproject.tracking.client import ParentRun

# Fields added after sweeps were keyed that do change what a run computes: in the key only when set
# to something else than their default, so the sweeps planned before them still resume.
LATER_FIELDS = {"train.scheduler": "cosine", "train.amp": False, "train.amp_dtype": "bf16"}


@dataclass
class ChildSpec:
    """One child run: its group (model version or axis value), seed and resolved config."""

    group: str
    seed: int
    cfg: RunConfig
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.group}-s{self.seed}"


@dataclass
class SweepSpec:
    """What a compare or ablation job runs; built and validated before any run is created."""

    kind: str                   # compare | ablation
    run_name: str               # parent run name
    experiment: str             # experiment of the parent (unless `mlflow run` chose one)
    key: str                    # sweep key: matches the children of an interrupted sweep
    groups: list[str]           # baseline first
    metrics: list[str]          # child summary metrics aggregated on the parent
    children: list[ChildSpec]
    base: RunConfig             # the shared config (its data section is prepared once)
    params: dict[str, Any]      # logged on the parent
    config_text: str            # the job's resolved YAML, logged as sweep.yaml
    parallel: int = 1
    resume: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    register_best: str | None = None  # register the best child's model under this name
    eval_datasets: list[str] = field(default_factory=list)  # evaluated after training (research.eval_metrics)
    register_best_ungated: bool = False  # `best` to the lowest-loss child without the evidence gate
    alpha: float = 0.05                  # of the paired tests, the power figures and the alias gate
    effect: float | None = None          # the difference the seeds-needed figure refers to
    targets: list[str] = field(default_factory=list)  # metric=value: time-to-target (research.targets)
    target_alpha: float = 0.01
    verbose: bool = False                # children's full output on the console (else one line each)
    log_file: str | None = None          # every child's full output appended here too
    ladder: dict[str, Any] | None = None  # a ladder's design (research.ladder): groups, rungs, cells
    # The next round of an adaptive sweep (research.adaptive): continue this ParentRun, keeping
    # its children, instead of opening a parent (a resume would pick the newest same-key parent,
    # or under `mlflow run` an older one).
    parent: ParentRun | None = None


# ----------------------------------------------------------------------------- job helpers

def load_job(yaml_path: str | os.PathLike[str] | None, args: Any, section: str, cls: type,
             extra_keys: Sequence[str] = ()) -> tuple[RunConfig, Any, dict[str, Any]]:
    """RunConfig sections + the job's own section from YAML and flags, plus raw `extra_keys`."""
    data = load_yaml(yaml_path) if yaml_path else {}
    extras = {k: data.pop(k) for k in extra_keys if k in data}
    sections = build_sections({**RunConfig.SECTIONS, section: cls}, yaml_path=yaml_path, args=args, data=data,
                              defaults=command_defaults(args))
    job = sections.pop(section)
    return RunConfig(**sections), job, extras


def sweep_key(kind: str, base: RunConfig, drop: Sequence[str], extra: Mapping[str, Any]) -> str:
    """Hash of what makes two sweeps the same: the recipe (`RunConfig.key_fields`: no tracking or
    runtime section) minus seeds and the varied field, plus job settings."""
    ignored = {"train.seed", "train.data_seed", *drop}
    config = {k: v for k, v in base.key_fields(ignored).items()
              if not (k in LATER_FIELDS and LATER_FIELDS[k] == v)}
    payload = {"kind": kind, "config": config, **extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def child_config(base: RunConfig, *, model: Any, train: Any, seed: int) -> RunConfig:
    """A child's RunConfig: its model and train sections with `seed` for init and data order."""
    # The data order follows the seed, not the model (data_seed defaults to seed when the run's
    # config is resolved): for a given seed every group sees the same batches, so the paired
    # comparison across seeds cancels data-order noise.
    return RunConfig(model=model, data=base.data, train=replace(train, where="child: train", seed=seed),
                     tracking=replace(base.tracking, where="child: tracking"), runtime=base.runtime)


def with_context(where: str, exc: ConfigError) -> ConfigError:
    """`exc` prefixed with `where` unless its message already starts with the file name."""
    message = str(exc)
    return ConfigError(message if message.startswith(where.split(":")[0]) else f"{where}: {message}")


def experiment_for(base: RunConfig, kind: str) -> str:
    """A sweep's default experiment is named for its kind: `compare-<dataset>`, `ablation-<dataset>`..."""
    return base.experiment_for(kind)

