"""`mlproject ablate`: one architecture axis varied over values, every value trained per seed.

Values are parsed by the axis's type in GPTConfig (`"0.1"` -> 0.1 for dropout, `"true"` for
gradient_checkpointing), and every value is checked against the rest of the config
(`GPTConfig.resolved()`: d_model divisible by n_head, an even head dim for RoPE, ...) before
any run is created. The first value is the baseline of the paired comparisons. For axes that
trade speed or memory (attention kernel, activation recomputation) the parent also aggregates
tokens/s and peak memory, so the ablation shows the cost next to the loss.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from typing import Any

from mlproject.config import coerce, dump_yaml, flatten, replace, to_dict
from mlproject.errors import ConfigError
from mlproject.model.config import GPTConfig
from mlproject.data.config import DataConfig
from mlproject.research.config import AblationConfig
from mlproject.research.eval_metrics import check_eval_datasets, prefer_bpb, with_eval_metrics
from mlproject.research.sweep import (ChildSpec, SweepOutcome, SweepSpec, child_config, experiment_for, load_job,
                                      sweep_key, with_context)
from mlproject.app.config import RunConfig
from mlproject.schema import SweepKind, Tag

AXES = ("norm_type", "mlp_type", "pos_encoding", "attention_impl", "gradient_checkpointing", "dropout",
        "resid_dropout", "n_layer", "n_head", "d_model", "mlp_expansion", "attention_pattern", "attention_window",
        "vocab_size")
DATA_AXES = {"vocab_size"}  # axes of the data section: each value trains its own tokenizer
SPEED_AXES = {"attention_impl": ("tokens_per_sec", "peak_mem_mb"),
              "gradient_checkpointing": ("tokens_per_sec", "peak_mem_mb")}


def value_label(value: Any) -> str:
    """How a value names its group: `rmsnorm`, `0.1`, `true`, `default` (None)."""
    if value is None:
        return "default"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parse_values(axis: str, raw: list[str], source: str = "ablation") -> list[Any]:
    """Values of `axis` parsed by its GPTConfig annotation; unknown axis or duplicates are errors."""
    if axis not in AXES:
        raise ConfigError(f"{source}: ablation_axis={axis!r} is not an ablation axis; expected one of: {', '.join(AXES)}")
    tp = typing.get_type_hints(DataConfig if axis in DATA_AXES else GPTConfig)[axis]
    values = [coerce(v, tp, key=f"ablation_values ({axis})", source=source) for v in raw]
    labels = [value_label(v) for v in values]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigError(f"{source}: ablation_values has {axis}={duplicates[0]} more than once")
    return values


@dataclass
class AblationJob:
    """The shared RunConfig and the ablation settings (axis, values, seeds)."""

    run: RunConfig
    ablation: AblationConfig
    values: list[Any]
    source: str = "flags"

    @classmethod
    def load(cls, yaml_path: str | os.PathLike[str] | None = None, args: Any = None) -> AblationJob:
        """From a YAML file (model/data/train/tracking/ablation) with flags overriding it; every
        value is validated against the model config here, before anything runs."""
        run, ablation, _ = load_job(yaml_path, args, "ablation", AblationConfig)
        source = str(yaml_path) if yaml_path else "flags"
        if ablation.ablation_axis == "vocab_size":
            if run.data.tokenizer_path:
                raise ConfigError(f"{source}: ablation over vocab_size trains one tokenizer per value; "
                                  f"drop data.tokenizer_path={run.data.tokenizer_path!r}")
            ablation = replace(ablation, metrics=prefer_bpb(ablation.metrics, "ablation over vocab_size"))
        job = cls(run, ablation, parse_values(ablation.ablation_axis, ablation.ablation_values, f"{source}: ablation"),
                  source)
        job.children()
        check_eval_datasets(ablation.eval_datasets, f"{source}: ablation")
        return job

    @property
    def metrics(self) -> list[str]:
        extra = SPEED_AXES.get(self.ablation.ablation_axis, ())
        return with_eval_metrics(list(dict.fromkeys([*self.ablation.metrics, *extra])), self.ablation.eval_datasets)

    def children(self) -> list[ChildSpec]:
        """One child per seed x value (seed-major, so finished pairs accumulate early)."""
        axis = self.ablation.ablation_axis
        if axis in DATA_AXES:
            return self._data_children()
        models = {}
        for value in self.values:
            label = value_label(value)
            try:
                model = replace(self.run.model, where=f"{self.source}: ablation {axis}={label}", **{axis: value})
                model.resolved()
            except ConfigError as exc:
                raise with_context(f"{self.source}: ablation {axis}={label}", exc) from None
            models[label] = model
        return [ChildSpec(group=label, seed=seed,
                          cfg=child_config(self.run, model=model, train=self.run.train, seed=seed),
                          tags={Tag.ABLATION_AXIS: axis, Tag.ABLATION_VALUE: label,
                                Tag.MODEL_VERSION: model.model_version})
                for seed in self.ablation.seeds for label, model in models.items()]

    def _data_children(self) -> list[ChildSpec]:
        """Children of a data axis: the same model, each value's own data section (and tokenizer)."""
        axis = self.ablation.ablation_axis
        bases = {}
        for value in self.values:
            label = value_label(value)
            try:
                bases[label] = self.run.replace(source=f"{self.source}: ablation {axis}={label}", data={axis: value})
            except ConfigError as exc:
                raise with_context(f"{self.source}: ablation {axis}={label}", exc) from None
        return [ChildSpec(group=label, seed=seed,
                          cfg=child_config(base, model=self.run.model, train=self.run.train, seed=seed),
                          tags={Tag.ABLATION_AXIS: axis, Tag.ABLATION_VALUE: label,
                                Tag.MODEL_VERSION: self.run.model.model_version})
                for seed in self.ablation.seeds for label, base in bases.items()]

    def spec(self) -> SweepSpec:
        a = self.ablation
        section = "data" if a.ablation_axis in DATA_AXES else "model"
        groups = [value_label(v) for v in self.values]
        params = self.run.params()
        params.pop(f"{section}.{a.ablation_axis}", None)  # varies per child
        params.update(flatten({"axis": a.ablation_axis, "values": " ".join(groups),
                               "seeds": " ".join(map(str, a.seeds)), "metrics": " ".join(self.metrics)}, "ablation"))
        sections = self.run.sections()
        return SweepSpec(
            kind=SweepKind.ABLATION, run_name=a.parent_run_name or f"ablation-{a.ablation_axis}",
            experiment=experiment_for(self.run, SweepKind.ABLATION),
            key=sweep_key("ablation", self.run, drop=[f"{section}.{a.ablation_axis}"], extra={"axis": a.ablation_axis}),
            groups=groups, metrics=self.metrics, children=self.children(), base=self.run, params=params,
            parallel=a.parallel, resume=a.resume, tags={Tag.ABLATION_AXIS: a.ablation_axis},
            register_best=a.register_best,
            register_best_ungated=a.register_best_ungated, alpha=a.alpha, effect=a.effect,
            targets=list(a.target), target_alpha=a.target_alpha,
            verbose=a.verbose, log_file=a.log_file,
            eval_datasets=list(a.eval_datasets),
            config_text=dump_yaml({**sections, "ablation": to_dict(a)}))


def run_ablation(job: AblationJob) -> SweepOutcome:
    """Train every value x seed as children of one parent run and log the ablation;
    with `adaptive_seeds`, in rounds of seeds until the answer is clear (research.adaptive)."""
    from mlproject.research.adaptive import run_job

    return run_job(job, "ablation")
