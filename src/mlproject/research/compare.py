"""`mlproject compare`: a fair comparison of model versions across seeds.

Fair by construction: for a given seed every model sees the same data order (data seed =
seed, independent of init), the same token budget (batch size, steps and, unless set, the
baseline's context length) and, with `fair_recipe`, the baseline's optimizer recipe. A model
may differ on purpose through a `per_model:` section of the YAML, recorded on its child run:

    per_model:
      gpt3: {train: {learning_rate: 3.0e-4}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlproject.config import dump_yaml, flatten, replace, to_dict
from mlproject.errors import ConfigError
from mlproject.model.config import DEFAULT_BLOCK_SIZE, GPTConfig
from mlproject.research.config import CompareConfig
from mlproject.research.eval_metrics import check_eval_datasets, with_eval_metrics
from mlproject.research.sweep import (ChildSpec, SweepOutcome, SweepSpec, child_config, experiment_for, load_job,
                                      sweep_key, with_context)
from mlproject.app.config import RunConfig
from mlproject.schema import SweepKind, Tag
from mlproject.training.config import TrainConfig

# Sections a per-model override may change, and fields it may not (the sweep sets them).
PER_MODEL_SECTIONS = {"model": GPTConfig, "train": TrainConfig}
_SWEEP_FIELDS = {"model_version", "seed", "data_seed"}


@dataclass
class CompareJob:
    """The shared RunConfig, the compare settings and the per-model overrides."""

    run: RunConfig
    compare: CompareConfig
    per_model: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    source: str = "flags"

    @classmethod
    def load(cls, yaml_path: str | os.PathLike[str] | None = None, args: Any = None) -> CompareJob:
        """From a YAML file (model/data/train/tracking/compare/per_model) with flags overriding it;
        every child config is validated here, before anything runs."""
        run, compare, extras = load_job(yaml_path, args, "compare", CompareConfig, extra_keys=("per_model",))
        source = str(yaml_path) if yaml_path else "flags"
        job = cls(run, compare, _per_model(extras.get("per_model"), compare.models, source), source)
        job.children()
        check_eval_datasets(compare.eval_datasets, f"{source}: compare")
        return job

    def children(self) -> list[ChildSpec]:
        """One child per seed x model (seed-major, so finished pairs accumulate early)."""
        return [self._child(version, seed) for seed in self.compare.seeds for version in self.compare.models]

    def _child(self, version: str, seed: int) -> ChildSpec:
        base, baseline = self.run, self.compare.models[0]
        model_changes: dict[str, Any] = {"model_version": version}
        train_changes: dict[str, Any] = {}
        if self.compare.fair_recipe:
            # GPT-3's recipe (betas, weight decay) and its 2048-token default context differ
            # from GPT-2's; left alone, the comparison would measure recipe and token budget
            # along with the architecture.
            if base.train.recipe is None:
                train_changes["recipe"] = baseline
            if base.model.block_size is None:
                model_changes["block_size"] = DEFAULT_BLOCK_SIZE[baseline]
        override = self.per_model.get(version, {})
        where = f"{self.source}: per_model.{version}"
        try:
            model = replace(base.model, where=f"{where}.model", **{**model_changes, **override.get("model", {})})
            train = replace(base.train, where=f"{where}.train", **{**train_changes, **override.get("train", {})})
            model.resolved()
        except ConfigError as exc:
            raise with_context(f"{self.source}: compare model {version}", exc) from None
        tags = {Tag.MODEL_VERSION: version, Tag.RECIPE: train.recipe or version}
        if override:
            tags[Tag.PER_MODEL_OVERRIDE] = json.dumps(override, sort_keys=True)
        return ChildSpec(group=version, seed=seed, cfg=child_config(base, model=model, train=train, seed=seed),
                         tags=tags)

    def spec(self) -> SweepSpec:
        c = self.compare
        sections = self.run.sections()
        params = self.run.params()
        params.update(flatten({"models": " ".join(c.models), "seeds": " ".join(map(str, c.seeds)),
                               "fair_recipe": c.fair_recipe, "metrics": " ".join(c.metrics)}, "compare"))
        if c.eval_datasets:
            params["compare.eval_datasets"] = " ".join(c.eval_datasets)
        if self.per_model:
            params["compare.per_model"] = json.dumps(self.per_model, sort_keys=True)
        return SweepSpec(
            kind=SweepKind.COMPARE, run_name=c.parent_run_name or "compare-" + "-vs-".join(c.models),
            experiment=experiment_for(self.run, SweepKind.COMPARE),
            key=sweep_key("compare", self.run, drop=["model.model_version"],
                          extra={"fair_recipe": c.fair_recipe, "per_model": self.per_model}),
            groups=list(c.models), metrics=with_eval_metrics(c.metrics, c.eval_datasets), children=self.children(),
            base=self.run, params=params, parallel=c.parallel, resume=c.resume, register_best=c.register_best,
            register_best_ungated=c.register_best_ungated, alpha=c.alpha, effect=c.effect,
            targets=list(c.target), target_alpha=c.target_alpha,
            verbose=c.verbose, log_file=c.log_file,
            eval_datasets=list(c.eval_datasets),
            config_text=dump_yaml({**sections, "compare": to_dict(c), "per_model": self.per_model}))


def _per_model(raw: Any, models: list[str], source: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Validate `per_model: {version: {model|train: {field: value}}}` (values checked per child)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: per_model must be a mapping of model version to sections")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for version, sections in raw.items():
        if version not in models:
            raise ConfigError(f"{source}: per_model.{version}: not one of the compared models ({', '.join(models)})")
        if not isinstance(sections, Mapping):
            raise ConfigError(f"{source}: per_model.{version} must be a mapping of sections")
        for name, values in sections.items():
            if name not in PER_MODEL_SECTIONS:
                raise ConfigError(f"{source}: per_model.{version}: unknown section {name!r}; "
                                  f"allowed sections: {', '.join(PER_MODEL_SECTIONS)}")
            if not isinstance(values, Mapping):
                raise ConfigError(f"{source}: per_model.{version}.{name} must be a mapping")
            fixed = _SWEEP_FIELDS & {str(k).replace("-", "_") for k in values}
            if fixed:
                raise ConfigError(f"{source}: per_model.{version}.{name}.{sorted(fixed)[0]} is set by the sweep "
                                  "and cannot be overridden per model")
            out.setdefault(str(version), {})[name] = dict(values)
    return out


def run_compare(job: CompareJob) -> SweepOutcome:
    """Train every model x seed as children of one parent run and log the comparison;
    with `adaptive_seeds`, in rounds of seeds until the answer is clear (research.adaptive)."""
    from mlproject.research.adaptive import run_job

    return run_job(job, "compare")
