"""`mlproject reproduce` of a sweep parent: every child re-made, the group means judged by TOST.

Each FINISHED child of the parent is reproduced (`reproduce_step.reproduce_run`) as a run nested
under one new run tagged `mlproject.reproduces=PARENT`. Per group, the parent's first metric over
the seeds of the original children and of their reproductions goes to a TOST equivalence test
(`reproduce.tost_verdict`, paired by seed) at `--margin`; by default the smallest difference
the original sweep could detect (`power.paired_power` of each group against the baseline), so
"equivalent" means "no larger than what the original could have told apart".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlproject.errors import MlprojectError
from mlproject.protocol import release_process_run
from mlproject.research.config import ReproduceConfig
from mlproject.research.power import paired_power
from mlproject.research.reproduce import EquivalenceVerdict, tost_verdict
from mlproject.research.reproduce_step import Reproduction, reproduce_run
from mlproject.schema import Artifact, RunStatus, Tag

Values = dict[str, dict[int, float]]  # group -> seed -> metric value


@dataclass
class SweepReproduction:
    original_run_id: str
    run_id: str
    metric: str
    margin: float
    groups: dict[str, EquivalenceVerdict]
    children: list[Reproduction]
    report: str

    @property
    def equivalent(self) -> bool:
        return bool(self.groups) and all(v.equivalent for v in self.groups.values())

    @property
    def verdict_text(self) -> str:
        return "reproduced" if self.equivalent else "not shown equivalent"

    @property
    def exit_code(self) -> int:
        return 0 if self.equivalent else 1


def default_margin(values: Values, groups: Sequence[str]) -> float:
    """The smallest minimum detectable difference of a group against the baseline (groups[0])."""
    baseline = values.get(groups[0], {}) if groups else {}
    found = []
    for group in groups[1:]:
        seeds = sorted(set(baseline) & set(values.get(group, {})))
        mdd = paired_power([values[group][s] - baseline[s] for s in seeds]).min_detectable_diff
        if mdd is not None:
            found.append(mdd)
    if not found:
        raise MlprojectError("the original sweep gives no minimum detectable difference (too few seeds or no "
                             "spread); give the equivalence margin with --margin")
    return min(found)


def _children(parent: Any, seeds: Sequence[int] | None = None) -> list[Any]:
    """The FINISHED children to re-make: all of them, or those of `seeds` (`--seeds`)."""
    from mlproject.tracking.queries import child_runs

    children = [c for c in child_runs(parent)
                if c.status == RunStatus.FINISHED and Tag.GROUP in c.tags and Tag.SEED in c.tags]
    if not children:
        raise MlprojectError(f"sweep parent {parent.run_id} has no FINISHED children to reproduce")
    if seeds:
        have = sorted({int(c.tags[Tag.SEED]) for c in children})
        if missing := sorted(set(seeds) - set(have)):
            raise MlprojectError(f"reproduce: seeds {missing} are not seeds of sweep {parent.run_id}; "
                                 f"expected some of {have}")
        children = [c for c in children if int(c.tags[Tag.SEED]) in set(seeds)]
    return children


def _value(run: Any, metric: str) -> float:
    if metric not in run.metrics:
        raise MlprojectError(f"run {run.run_id} has no metric {metric!r}; the sweep cannot be judged on it")
    return float(run.metrics[metric])


def sweep_report(s: SweepReproduction) -> str:
    lines = [f"reproduce: sweep {s.original_run_id} -> run {s.run_id}: {s.verdict_text} "
             f"({s.metric}, TOST margin ±{s.margin:.3g})"]
    lines += [f"  {group}: {v.describe()}" for group, v in s.groups.items()]
    lines += [f"  child {c.original_run_id} -> {c.run_id}: {c.verdict.value}" for c in s.children]
    return "\n".join(lines)


def reproduce_sweep(parent: Any, opts: ReproduceConfig) -> SweepReproduction:
    """Reproduce every FINISHED child of `parent` and judge the group means (see the module doc)."""
    from mlproject.tracking import client
    from mlproject.tracking.queries import experiment_name, get_run

    metric = json.loads(parent.tags.get(Tag.METRICS) or '["val_loss_best"]')[0]
    if opts.max_steps is not None:
        raise MlprojectError(f"reproduce: --max-steps applies to a training run; sweep {parent.run_id} is judged on "
                             f"its children's final {metric}, which a shortened run does not reach")
    children = _children(parent, opts.seeds)
    groups = json.loads(parent.tags.get(Tag.GROUPS) or "[]") or sorted({c.tags[Tag.GROUP] for c in children})
    original: Values = {}
    for child in children:
        original.setdefault(child.tags[Tag.GROUP], {})[int(child.tags[Tag.SEED])] = _value(child, metric)
    margin = opts.margin or default_margin(original, groups)
    run_id, _ = client.open_run(experiment=experiment_name(parent.experiment_id),
                                run_name=f"reproduce-{parent.run_name or parent.run_id[:8]}",
                                tags={Tag.REPRODUCES: parent.run_id})
    release_process_run()  # the children's reproductions are runs of their own, nested under it
    reproduced: Values = {}
    repros = []
    try:
        for child in children:
            repro = reproduce_run(child, opts, parent_run_id=run_id)
            repros.append(repro)
            reproduced.setdefault(child.tags[Tag.GROUP], {})[int(child.tags[Tag.SEED])] = \
                _value(get_run(repro.run_id), metric)
    except BaseException:
        client.set_status(run_id, RunStatus.FAILED)
        raise
    verdicts = {g: tost_verdict(original[g], reproduced.get(g, {}), margin) for g in groups if g in original}
    outcome = SweepReproduction(parent.run_id, run_id, metric, margin, verdicts, repros, "")
    outcome.report = sweep_report(outcome)
    print(outcome.report, flush=True)
    client.log_text(run_id, outcome.report, Artifact.REPRODUCE_REPORT)
    client.set_tags(run_id, {Tag.REPRODUCE_VERDICT: outcome.verdict_text})
    client.describe_run(run_id, note=f"Reproduces sweep {parent.run_id}: **{outcome.verdict_text}**.")
    client.set_tags(parent.run_id, {Tag.REPRODUCED_BY: run_id})
    client.set_status(run_id, RunStatus.FINISHED)
    return outcome
