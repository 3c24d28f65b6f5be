"""`mlproject ladder`: does a difference hold as models grow? A scaling ladder on the sweep engine.

The groups (model versions, or one architecture axis's values as in ablate; the baseline first)
are each trained at every rung (model size, small to large) over the seeds: one child run per
group x rung x seed under one parent, planned, trained and aggregated by research/sweep/ like
a compare (so `--parallel`, `--resume`, `--plan-only` / `--aggregate` and the DAG's mapped tasks
work alike). A child's sweep group is its cell, `<group>@<rung>` (`<group>@<rung>@<budget>` in
iso-FLOP mode), which is how a resumed ladder finds its finished children.

Each rung's token budget follows one rule:

- `tokens_per_param` (default 20, Chinchilla's ratio): tokens = ratio x non-embedding params;
- `tokens`: the same token count at every rung;
- `iso_flop: [C1, C2, ...]`: every rung trained to each compute budget (tokens = C / FLOPs per token).

A child trains `max_steps = tokens / tokens per step` steps (its epochs are lifted so the step
count decides) and logs its compute, `flops` = FLOPs per token x tokens trained. The aggregate
stage (research/ladder_report.py) fits L(C) = E + A C^-alpha per group with bootstrap intervals
and checks the fit on the held-out rungs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from mlproject.app.config import RunConfig
from mlproject.config import dump_yaml, flatten, replace, to_dict
from mlproject.errors import ConfigError
from mlproject.model.config import DEFAULT_BLOCK_SIZE, PRESETS, GPTConfig
from mlproject.research.config import LadderConfig, LadderFields
from mlproject.research.sweep import (ChildSpec, SweepOutcome, SweepSpec, child_config, experiment_for, load_job,
                                      run_sweep, sweep_key, with_context)
from mlproject.schema import SweepKind, Tag
from mlproject.training.config import TrainConfig

# The fields a rung sets (and the sweep key leaves out: they vary per child).
_SIZE_FIELDS = ("preset", "n_layer", "n_head", "d_model")
# Lifted so that max_steps, the budget, decides when a child stops (a small corpus would end at epoch 1).
_LADDER_EPOCHS = 1_000_000


def parse_rung(text: str, source: str = "ladder") -> tuple[int, int, int]:
    """(n_layer, n_head, d_model) of a preset name or `LxHxD`, or a one-line error naming the rung."""
    if text in PRESETS:
        return PRESETS[text]
    parts = text.lower().split("x")
    if len(parts) == 3 and all(p.isdigit() and int(p) > 0 for p in parts):
        n_layer, n_head, d_model = (int(p) for p in parts)
        return n_layer, n_head, d_model
    raise ConfigError(f"{source}: rung {text!r} is neither a preset ({', '.join(PRESETS)}) nor "
                      "n_layer x n_head x d_model such as 2x4x64")


@dataclass(frozen=True)
class Size:
    """What a model of one rung costs: non-embedding parameters and training FLOPs per token."""

    params: int
    flops_per_token: int


def model_size(model: GPTConfig, vocab_size: int) -> Size:
    """Counted on a model built on the meta device (no memory, no initialisation)."""
    import torch

    from mlproject.model.gpt import GPT

    with torch.device("meta"):
        gpt = GPT(replace(model, vocab_size=vocab_size))
    return Size(gpt.num_params(exclude_embeddings=True), gpt.flops_per_token())


@dataclass
class LadderJob:
    """The shared RunConfig and the ladder settings; every child is planned and checked at load."""

    run: RunConfig
    ladder: LadderConfig
    source: str = "flags"

    @classmethod
    def load(cls, yaml_path: str | os.PathLike[str] | None = None, args: Any = None) -> LadderJob:
        """From a YAML file (model/data/train/tracking/ladder) with flags overriding it; bad rungs,
        budgets or too few fitted rungs are one-line errors here, before any run exists."""
        run, ladder, _ = load_job(yaml_path, args, "ladder", LadderConfig)
        job = cls(run, ladder, str(yaml_path) if yaml_path else "flags")
        job.cells()
        return job

    @property
    def mode(self) -> str:
        if self.ladder.iso_flop:
            return "iso_flop"
        return "tokens" if self.ladder.tokens is not None else "tokens_per_param"

    def groups(self) -> dict[str, GPTConfig]:
        """Each group's model config before the rung sets its size (baseline first)."""
        from mlproject.research.ablation import DATA_AXES, parse_values, value_label

        base, c = self.run.model, self.ladder
        if c.ladder_axis is None:
            baseline = c.models[0]
            changes = {"block_size": base.block_size or DEFAULT_BLOCK_SIZE[baseline]}
            return {v: replace(base, model_version=v, **changes) for v in c.models}
        if c.ladder_axis in DATA_AXES or c.ladder_axis in _SIZE_FIELDS:
            raise ConfigError(f"{self.source}: ladder: ladder_axis={c.ladder_axis} cannot be a ladder's groups "
                              "(the rungs set the size and share one tokenizer); choose a model axis")
        values = parse_values(c.ladder_axis, c.ladder_values, f"{self.source}: ladder")
        return {value_label(v): replace(base, **{c.ladder_axis: v}) for v in values}

    def cells(self) -> list[dict[str, Any]]:
        """One cell per group x rung (x budget): its label, model, size and step count, checked."""
        vocab = _vocab_size(self.run)
        out, sizes = [], {}
        for group, model in self.groups().items():
            for rung in self.ladder.rungs:
                n_layer, n_head, d_model = parse_rung(rung, f"{self.source}: ladder")
                try:
                    sized = replace(model, where=f"{self.source}: ladder rung {rung}", preset=None, n_layer=n_layer,
                                    n_head=n_head, d_model=d_model).resolved()
                except ConfigError as exc:
                    raise with_context(f"{self.source}: ladder {group} rung {rung}", exc) from None
                size = model_size(sized, vocab)
                sizes.setdefault(group, []).append((rung, size.params))
                for budget in self.ladder.iso_flop or [None]:
                    out.append(self._cell(group, rung, sized, size, budget))
        for group, by_rung in sizes.items():
            _check_increasing(group, by_rung, self.source)
        return out

    def _cell(self, group: str, rung: str, model: GPTConfig, size: Size, budget: float | None) -> dict[str, Any]:
        c, train = self.ladder, self.run.train
        if budget is not None:
            tokens = budget / size.flops_per_token
        elif c.tokens is not None:
            tokens = float(c.tokens)
        else:
            tokens = c.tokens_per_param * size.params
        per_step = train.batch_size * model.block_size * train.grad_accum_steps
        steps = max(1, round(tokens / per_step))
        label = f"{group}@{rung}" + (f"@{budget:.3g}" if budget is not None else "")
        return {"label": label, "group": group, "rung": rung, "budget": budget, "params": size.params,
                "flops_per_token": size.flops_per_token, "steps": steps, "tokens": steps * per_step,
                "model": model}

    def children(self) -> list[ChildSpec]:
        """One child per seed x cell (seed-major: a whole ladder per seed finishes early)."""
        cells = self.cells()
        return [self._child(cell, seed) for seed in self.ladder.seeds for cell in cells]

    def _child(self, cell: dict[str, Any], seed: int) -> ChildSpec:
        base = self.run
        changes: dict[str, Any] = {"max_steps": cell["steps"], "epochs": _LADDER_EPOCHS}
        if self.ladder.ladder_axis is None and base.train.recipe is None:
            changes["recipe"] = self.ladder.models[0]  # one recipe: the ladder measures the architecture
        train = replace(base.train, where=f"{self.source}: ladder", **changes)
        tags = {Tag.MODEL_VERSION: cell["model"].model_version, Tag.LADDER_GROUP: cell["group"],
                Tag.LADDER_RUNG: cell["rung"]}
        if cell["budget"] is not None:
            tags[Tag.LADDER_BUDGET] = repr(cell["budget"])
        if self.ladder.ladder_axis is not None:
            tags.update({Tag.ABLATION_AXIS: self.ladder.ladder_axis, Tag.ABLATION_VALUE: cell["group"]})
        return ChildSpec(group=cell["label"], seed=seed,
                         cfg=child_config(base, model=cell["model"], train=train, seed=seed), tags=tags)

    def design(self) -> dict[str, Any]:
        """What the aggregate stage needs to know (stored with the plan): groups, rungs, cells."""
        c = self.ladder
        cells = [{k: v for k, v in cell.items() if k != "model"} for cell in self.cells()]
        return {"mode": self.mode, "groups": list(dict.fromkeys(cell["group"] for cell in cells)),
                "rungs": list(c.rungs), "budgets": list(c.iso_flop), "holdout": c.holdout, "metric": c.metric,
                "bootstrap": c.bootstrap, "bootstrap_seed": c.bootstrap_seed, "alpha": c.alpha,
                "axis": c.ladder_axis, "cells": cells}

    def spec(self) -> SweepSpec:
        c = self.ladder
        design = self.design()
        sections = self.run.sections()
        params = self.run.params()
        for name in (*_SIZE_FIELDS, "model_version"):
            params.pop(f"model.{name}", None)
        own = {k: v for k, v in to_dict(c).items() if k in {f.name for f in dataclasses.fields(LadderFields)}}
        params.update(flatten({k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in own.items()},
                              "ladder"))
        params["ladder.mode"] = self.mode
        return SweepSpec(
            kind=SweepKind.LADDER, run_name=c.parent_run_name or "ladder-" + "-vs-".join(design["groups"]),
            experiment=experiment_for(self.run, SweepKind.LADDER),
            key=sweep_key("ladder", self.run, drop=[f"model.{n}" for n in (*_SIZE_FIELDS, "model_version")]
                          + ["train.max_steps", "train.epochs"], extra={"ladder": own}),
            groups=[cell["label"] for cell in design["cells"]], metrics=list(dict.fromkeys([c.metric, "flops"])),
            children=self.children(), base=self.run, params=params, parallel=c.parallel, resume=c.resume,
            # the cells of a ladder are not candidates against a baseline: no evidence gate
            register_best=c.register_best, register_best_ungated=bool(c.register_best),
            alpha=c.alpha, verbose=c.verbose, log_file=c.log_file, ladder=design,
            config_text=dump_yaml({**sections, "ladder": to_dict(c)}))


def _vocab_size(run: RunConfig) -> int:
    """The embedding rows a child will have: the tokenizer's vocabulary (the dataset's default
    when the config leaves it unset), padded as the trainer pads it."""
    from mlproject.data.registry import get_spec
    from mlproject.training.resolve import padded_vocab

    return padded_vocab(run.data.vocab_size or get_spec(run.data.dataset).vocab_size)


def _check_increasing(group: str, by_rung: list[tuple[str, int]], source: str) -> None:
    """Rungs must grow in non-embedding parameters, small to large: a one-line error names the pair."""
    for (prev, n_prev), (rung, n) in zip(by_rung, by_rung[1:]):
        if n <= n_prev:
            raise ConfigError(f"{source}: ladder: rungs must increase in size: {rung} ({n:,} non-embedding params) "
                              f"is not larger than {prev} ({n_prev:,}) for {group}; list the rungs small to large")


def run_ladder(job: LadderJob) -> SweepOutcome:
    """Train every group x rung x seed as children of one parent, then fit and check the laws."""
    return run_sweep(job.spec())
