"""`--adaptive-seeds MAX`: a compare or ablation that adds seeds in rounds until the answer is clear.

The sweep starts with the given seeds and, after each round, takes one look of the
group-sequential design (research/sequential.py: looks at seed counts fixed in advance,
O'Brien-Fleming alpha spending) at each candidate's paired differences against the baseline.
It stops when every candidate is decided (better or worse) or MAX seeds ran ("no difference
detectable with MAX seeds"). Several candidates split alpha evenly (Bonferroni): each one's own
sequential test keeps its error at alpha / m, so the family's stays at alpha, and a decided
candidate's verdict never changes as seeds are added for the others.

A round is more children of the same sweep (research/sweep/: `train_sweep` on the same parent
with resume), so `--parallel` trains a round's children at once and `--resume` of a killed
sweep keeps its finished children; the parent is aggregated once, after the last look. The looks are a pure function of the finished children, in
the order seeds were added: a resumed sweep recomputes the looks it took and continues at the
first one it had not finished. Added seeds are the integers after the largest starting seed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlproject.config import replace
from mlproject.errors import ConfigError, MlprojectError
from mlproject.research.sequential import SequentialDesign, SequentialState, design, evaluate
from mlproject.research.results import Row
from mlproject.research.sweep import (SweepOutcome, SweepPlan, SweepSpec, aggregate_sweep, load_plan, row_from_run,
                                      run_sweep, train_sweep)
from mlproject.schema import RunStatus, Tag

if TYPE_CHECKING:
    from mlproject.tracking.client import ParentRun


# A look's decision as a parent metric (MLflow metrics are numbers): 0 continue, +1 better, -1 worse.
DECISION_CODES = {"continue": 0.0, "better": 1.0, "worse": -1.0}


@dataclass(frozen=True)
class AdaptiveOutcome:
    """The last round's sweep outcome, the design and each candidate's sequential state."""

    outcome: SweepOutcome | None  # None until the final aggregate
    design: SequentialDesign
    states: dict[str, SequentialState]  # candidate group -> looks and verdict

    @property
    def verdicts(self) -> dict[str, str]:
        return {group: state.verdict or "undecided" for group, state in self.states.items()}


def seed_schedule(start: Sequence[int], max_seeds: int) -> list[int]:
    """The starting seeds, then the integers after the largest of them, MAX seeds in all."""
    seeds, following = list(start), max(start) + 1
    while len(seeds) < max_seeds:
        seeds.append(following)
        following += 1
    return seeds


def adaptive_design(start: int, max_seeds: int, alpha: float, candidates: int) -> SequentialDesign:
    """The design each candidate's test follows: alpha split evenly over the candidates."""
    return design(start, max_seeds, alpha=alpha / max(1, candidates))


def paired_diffs(rows: Sequence[Mapping], groups: Sequence[str], metric: str,
                 seeds: Sequence[int]) -> dict[str, list[float]]:
    """candidate - baseline of `metric` per seed, in the order seeds were added, for each
    candidate; the list stops at the first seed whose pair has not finished (or lacks the metric)."""
    values = {(r["group"], int(r["seed"])): r.get(metric) for r in rows if r.get("status") == RunStatus.FINISHED}
    out: dict[str, list[float]] = {}
    for group in groups[1:]:
        diffs: list[float] = []
        for seed in seeds:
            candidate, baseline = values.get((group, seed)), values.get((groups[0], seed))
            if candidate is None or baseline is None:
                break
            diffs.append(float(candidate) - float(baseline))
        out[group] = diffs
    return out


def decide(diffs: Mapping[str, Sequence[float]], plan: SequentialDesign, direction: str) -> dict[str, SequentialState]:
    """Each candidate's looks and verdict from its paired differences (a pure function)."""
    return {group: evaluate(plan, list(d), direction) for group, d in diffs.items()}


def next_seed_count(states: Mapping[str, SequentialState]) -> int | None:
    """Seeds the next round needs: the next look of the undecided candidates (None: all decided)."""
    pending = [s.next_seeds for s in states.values() if s.verdict is None and s.next_seeds is not None]
    return min(pending) if pending else None


def look_metrics(metric: str, baseline: str, states: Mapping[str, SequentialState]) -> dict[int, dict[str, float]]:
    """Per look (the metrics' step): n, t, z, boundary and decision code of each candidate."""
    from mlproject.research.results import metric_key

    by_look: dict[int, dict[str, float]] = {}
    for group, state in states.items():
        prefix = f"{metric}/{metric_key(group)}-{metric_key(baseline)}/sequential"
        for look in state.looks:
            by_look.setdefault(look.look, {}).update({
                f"{prefix}_n": look.n, f"{prefix}_t": _finite(look.t), f"{prefix}_z": _finite(look.z),
                f"{prefix}_boundary": look.boundary, f"{prefix}_decision": DECISION_CODES[look.decision]})
    return by_look


def _finite(value: float) -> float:
    """MLflow stores no infinities: identical differences (|t| = inf) are logged as +-1e9."""
    return max(-1e9, min(1e9, value))


def run_job(job: Any, section: str) -> SweepOutcome:
    """Run a compare or ablation job (`section` names its settings: "compare", "ablation"):
    one sweep, or with `adaptive_seeds` rounds of seeds until the answer is clear."""
    settings = getattr(job, section)
    if settings.adaptive_seeds is None:
        return run_sweep(job.spec())

    def spec_for(seeds: list[int]) -> SweepSpec:
        return dataclasses.replace(job, **{section: replace(settings, seeds=seeds)}).spec()

    return run_adaptive(spec_for, settings.seeds, settings.adaptive_seeds).outcome


def run_adaptive(spec_for: Callable[[list[int]], SweepSpec], start: Sequence[int], max_seeds: int) -> AdaptiveOutcome:
    """Run the sweep `spec_for(seeds)` round by round (the seeds of each look) until every
    candidate is decided or MAX seeds ran; log the looks and the verdicts on the parent, then
    aggregate it once (statistics, summary, the gated alias on the final evidence)."""
    from mlproject.research.describe import lower_is_better
    from mlproject.tracking import client

    first = spec_for(list(start))
    if len(first.groups) < 2:  # before any run exists: nothing to compare, so no look could decide
        raise ConfigError(f"{first.kind}: adaptive_seeds needs a baseline and at least one candidate, "
                          f"got groups {first.groups}")
    plan = adaptive_design(len(start), max_seeds, first.alpha, len(first.groups) - 1)
    seeds, metric = seed_schedule(start, max_seeds), first.metrics[0]
    direction = "minimize" if lower_is_better(metric) else "maximize"
    print(f"{first.kind}: adaptive seeds: {describe_design(plan, len(first.groups) - 1, first.alpha)}", flush=True)
    count, parent, sweep = plan.seeds[0], None, None
    try:
        while True:
            sweep = train_sweep(_round_spec(spec_for(seeds[:count]), first, parent, max_seeds))
            rows = _finished_rows(sweep)
            states = decide(paired_diffs(rows, first.groups, metric, seeds), plan, direction)
            _log_looks(sweep.parent_run_id, metric, first.groups[0], states)
            following = next_seed_count(states)
            if following is None:
                break
            count, parent = following, _continued_parent(sweep.parent_run_id)
            print(f"{first.kind}: adaptive seeds: no decision yet; the next look needs {count} seeds", flush=True)
    except BaseException as exc:
        if sweep is not None:  # interrupted between rounds: the parent must not stay RUNNING
            client.set_status(sweep.parent_run_id,
                              RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED)
        raise
    return _finish(first, sweep, AdaptiveOutcome(None, plan, states), metric)


def _finished_rows(sweep: SweepPlan) -> list[Row]:
    """The round's rows; a child that did not finish ends the sweep the way a fixed one ends
    (the aggregate reports it and raises, naming it: --resume continues)."""
    from mlproject.tracking.queries import get_run

    rows = [row_from_run(get_run(run_id), sweep.metrics) for run_id in sweep.child_run_ids]
    if any(r["status"] != RunStatus.FINISHED for r in rows):
        aggregate_sweep(sweep)
    return rows


def _round_spec(spec: SweepSpec, first: SweepSpec, parent: ParentRun | None, max_seeds: int) -> SweepSpec:
    """A round's spec: its seeds' children, the first round's parent params (MLflow params are
    immutable), and from the second round on the same parent with its children kept."""
    params = {**first.params, f"{first.kind}.adaptive_seeds": max_seeds}
    later = {"parent": parent, "resume": True} if parent is not None else {}
    return dataclasses.replace(spec, params=params, **later)


def _continued_parent(parent_run_id: str) -> ParentRun:
    """The ParentRun of the next round: this parent, and the parent its first round took over."""
    from mlproject.tracking.client import ParentRun
    from mlproject.tracking.queries import get_run

    plan = load_plan(parent_run_id)
    previous = get_run(plan.adopted_from or parent_run_id)
    return ParentRun(parent_run_id, plan.experiment_id, plan.experiment_name, previous)


def _log_looks(parent_run_id: str, metric: str, baseline: str, states: Mapping[str, SequentialState]) -> None:
    from mlproject.tracking import client

    for look, metrics in look_metrics(metric, baseline, states).items():
        client.log_metrics(parent_run_id, metrics, step=look)


def _finish(first: SweepSpec, sweep: SweepPlan, result: AdaptiveOutcome, metric: str) -> AdaptiveOutcome:
    """The verdicts as parent tags, the aggregate of the children that decided, and the verdict
    lines in the parent's description and printed after the summary."""
    from mlproject.tracking import client
    from mlproject.tracking.queries import get_run

    lines = verdict_lines(result, first.groups[0], metric)
    client.set_tags(sweep.parent_run_id, {Tag.ADAPTIVE_VERDICT: verdict_tag(result.verdicts),
                                          Tag.ADAPTIVE_DESIGN: design_tag(result.design)})
    outcome = aggregate_sweep(sweep)
    note = get_run(sweep.parent_run_id).tags.get(Tag.NOTE, "")
    client.describe_run(sweep.parent_run_id, note=note + "\n\n" + "\n".join(f"- {line}" for line in lines))
    print("\n".join(lines), flush=True)
    return dataclasses.replace(result, outcome=outcome)


def verdict_tag(verdicts: Mapping[str, str]) -> str:
    """The parent tag's value: the verdict alone with one candidate, else `group: verdict; ...`."""
    if len(verdicts) == 1:
        return next(iter(verdicts.values()))
    return "; ".join(f"{group}: {verdict}" for group, verdict in verdicts.items())


def design_tag(plan: SequentialDesign) -> str:
    return json.dumps({"seeds": list(plan.seeds), "boundaries": [round(b, 4) for b in plan.boundaries],
                       "alpha": plan.alpha})


def describe_design(plan: SequentialDesign, candidates: int, alpha: float) -> str:
    bounds = ", ".join(f"{b:.2f}" for b in plan.boundaries)
    split = f" (alpha {alpha:g} over {candidates} candidates: Bonferroni)" if candidates > 1 else ""
    return (f"looks at {', '.join(map(str, plan.seeds))} seeds, |z| boundaries {bounds}, "
            f"O'Brien-Fleming spending at alpha {plan.alpha:g}{split}")


def verdict_lines(result: AdaptiveOutcome, baseline: str, metric: str) -> list[str]:
    """One printed line per candidate: its verdict and the look that gave it."""
    lines = []
    for group, state in result.states.items():
        last = state.looks[-1] if state.looks else None
        where = (f" at look {last.look} of {len(result.design.seeds)} ({last.n} seeds, z = {last.z:+.2f}, "
                 f"boundary {last.boundary:.2f})") if last else ""
        lines.append(f"adaptive seeds: {group} vs {baseline} ({metric}): {state.verdict or 'undecided'}{where}")
    return lines
