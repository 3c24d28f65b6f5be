"""`mlproject tune`: hyperparameter search with Optuna, every trial a nested MLflow run.

    search_space:
      train.learning_rate: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
      train.warmup:        {type: int, low: 0, high: 40}
      model.dropout:       {type: float, low: 0.0, high: 0.2}
      train.batch_size:    {type: categorical, choices: [8, 16]}

Any field of the model/data/train sections can be searched. The sampler is TPE by default;
the pruner (median or successive halving) sees the val loss of every evaluation through a
trainer callback, so bad trials stop early. The study lives in a SQL database
(`tracking/tune_runs.study_storage`): several workers (`--parallel` processes, containers,
Airflow mapped tasks with `--parent-run-id`) share it, and a re-run with the same study name
continues it up to `--n-trials` in all. The parent run gets the best value and params and
Optuna's optimization-history and parameter-importance plots; `--then-compare` re-trains
the best config over seeds as a compare.

A trial records what ran, not what was sampled: a value the run changes (a warmup above the
trainer's cap of half the run, a fraction of the run resolved to steps, a max_steps beyond the
epochs) is the trial's MLflow param and its `effective_<name>` user attribute, and best_params
and the importances use it. A dimension whose whole range runs as one value is refused before
any run. A trial ends COMPLETE, PRUNED or FAIL (`TrialOutcome`) on its run's tag, the console
and its `step: trial` result line; a pruned trial stops after an evaluation (never the last
one), FINISHED with its metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlproject.config import dump_yaml, flatten, from_dict, merge, to_dict
from mlproject.errors import ConfigError, MlprojectError
from mlproject.protocol import hand_run_to, result_line
from mlproject.research.config import TuneConfig
from mlproject.research.sweep import load_job, sweep_key
from mlproject.app.config import RunConfig
from mlproject.schema import Artifact, RunStatus, SweepKind, Tag, TrialOutcome

SEARCHABLE = ("model", "data", "train")  # sections a search space may change
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
        fields = {f.name for f in dataclasses.fields(cls)}
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
    sections: dict[str, Any] = {}
    for section in SEARCHABLE:
        changes = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(section + ".")}
        current = getattr(base, section)
        sections[section] = (from_dict(type(current), merge(to_dict(current), changes), source=f"{source}: {section}")
                             if changes else current)
    tracking = dataclasses.replace(base.tracking, run_name=run_name or base.tracking.run_name,
                                   experiment_name=experiment or base.tracking.experiment_name, resume_from=None)
    cfg = RunConfig(**sections, tracking=tracking)
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
    flat = resolved.flat()
    steps = total_steps(resolved, len(data.train.tokens))
    out = {name: (flat[name], "the resolved config sets it") for name in names}
    if "train.warmup" in out:
        out["train.warmup"] = (resolve_warmup(resolved.train.warmup, steps),
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
        sections = {name: to_dict(getattr(self.run, name)) for name in RunConfig.SECTIONS}
        tune = to_dict(dataclasses.replace(self.tune, **tune_changes))
        return dump_yaml({**sections, "tune": tune, "search_space": self.space_raw})


@dataclass
class TuneOutcome:
    parent_run_id: str
    study_name: str
    best_value: float
    best_params: dict[str, Any]
    trials: dict[str, int]       # trials by state: COMPLETE, PRUNED, FAIL
    compare_run_id: str | None = None


def _pruner(trial: Any) -> Any:
    """A trainer callback that reports each evaluation's val_loss to the trial and, when Optuna
    says prune, asks the trainer to stop there: the run ends like any other, with its summary
    and metrics (built here so that importing this module needs no torch)."""
    from mlproject.training.trainer import TrainerCallback

    class Pruner(TrainerCallback):
        def __init__(self) -> None:
            self.total_steps = 0
            self.pruned_at: int | None = None

        def on_train_start(self, info: dict) -> None:
            self.total_steps = int(info["total_steps"])

        def on_eval(self, step: int, metrics: dict[str, float]) -> None:
            trial.report(metrics["val_loss"], step)
            # Never at the last step: the run is over, pruning it would save nothing.
            if step < self.total_steps and trial.should_prune():
                self.pruned_at = step

        def should_stop(self) -> bool:
            return self.pruned_at is not None

    return Pruner()


def _study(job: TuneJob, storage: str, seed: int) -> Any:
    import optuna

    sampler = (optuna.samplers.TPESampler(seed=seed) if job.tune.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=seed))
    pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
              "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
              "none": lambda: optuna.pruners.NopPruner()}[job.tune.pruner]()
    try:
        return optuna.create_study(study_name=job.study_name, storage=storage, direction="minimize",
                                   sampler=sampler, pruner=pruner, load_if_exists=True)
    except Exception as exc:  # an unreachable or foreign database
        raise MlprojectError(f"tune: cannot open study {job.study_name!r} in {storage.split('@')[-1]}: "
                             f"{str(exc).splitlines()[0]}") from None


def _counted(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)))


def _end_trial(name: str, run_id: str, state: TrialOutcome, detail: str = "") -> None:
    """The trial's state on its run (the run's status is set by training: see `TrialOutcome`),
    in its result line and on the console, in one vocabulary."""
    from mlproject.tracking import client

    client.set_tags(run_id, {Tag.TRIAL_STATE: state})
    print(f"--- {name}: {state}{' ' + detail if detail else ''} (run {run_id})", flush=True)
    print(result_line({"step": "trial", "run_id": run_id, "status": state}), flush=True)


def _close_unstarted(run_id: str, exc: BaseException) -> None:
    """A trial stopped before its training began leaves its run SCHEDULED: end it, KILLED for a
    signal (as training would have), FAILED otherwise, so no run of the search waits forever."""
    from mlproject.tracking import client

    if client.client().get_run(run_id).info.status == RunStatus.SCHEDULED:
        client.set_status(run_id, RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED)


def _optimize(job: TuneJob, study: Any, parent: Any, data: Any) -> None:
    """Run trials in this process until the study holds n_trials (counting other workers')."""
    import optuna
    from optuna.trial import TrialState

    from mlproject.tracking import client
    from mlproject.tracking.train_tracker import train_tracked

    worker = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: Any) -> float:
        sampled = {d.name: d.suggest(trial) for d in job.space}
        name = f"trial-{trial.number}"
        ran = effective_values(trial_config(job.run, sampled, source=name), list(sampled), data)
        values = {k: value for k, (value, _) in ran.items()}
        for key, value in values.items():  # what ran, for best_params and the importances
            trial.set_user_attr(f"effective_{key}", value)
        cfg = trial_config(job.run, values, run_name=name, experiment=parent.experiment_name, source=name)
        run_id = client.create_child(parent, run_name=name, tags={
            Tag.STUDY: job.study_name, Tag.TRIAL_NUMBER: str(trial.number), Tag.TUNE_WORKER: worker})
        try:  # from here on the run exists: whatever stops the trial, its run gets a state
            trial.set_user_attr("run_id", run_id)
            changed = {k: f"{sampled[k]} -> {v}" for k, v in values.items()
                       if json.dumps(v) != json.dumps(sampled[k])}
            print(f"--- {name}: {json.dumps(values)} run {run_id}"
                  + (f" (sampled values changed: {json.dumps(changed)})" if changed else ""), flush=True)
            pruner = _pruner(trial)
            outcome = train_tracked(cfg, parent_run_id=parent.run_id, run_id=run_id, callbacks=[pruner])
        except BaseException as exc:
            _end_trial(name, run_id, TrialOutcome.FAIL)
            _close_unstarted(run_id, exc)
            raise
        if outcome.status == RunStatus.KILLED:  # SIGINT/SIGTERM: stop the search (a re-run continues it)
            _end_trial(name, run_id, TrialOutcome.FAIL)
            raise KeyboardInterrupt(f"{name} was interrupted")
        value = outcome.summary.get(job.tune.metric)
        if pruner.pruned_at is not None:
            _end_trial(name, run_id, TrialOutcome.PRUNED, f"at step {pruner.pruned_at} of {pruner.total_steps}")
            raise optuna.TrialPruned(f"pruned at step {pruner.pruned_at}")
        if value is None or not math.isfinite(value):
            _end_trial(name, run_id, TrialOutcome.FAIL)
            raise MlprojectError(f"{name}: metric {job.tune.metric!r} is {value!r}; expected a finite number")
        _end_trial(name, run_id, TrialOutcome.COMPLETE, f"{job.tune.metric} {value:.4f}")
        return float(value)

    if _counted(study) >= job.tune.n_trials:
        print(f"tune: study {job.study_name!r} already has {job.tune.n_trials} trials", flush=True)
        return
    limit = optuna.study.MaxTrialsCallback(job.tune.n_trials,
                                           states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    # A failing trial (a diverging learning rate, say) is recorded as FAIL; the search goes on.
    study.optimize(objective, timeout=job.tune.timeout, callbacks=[limit], catch=(MlprojectError, RuntimeError))


def _run_workers(job: TuneJob, parent: Any, storage: str) -> None:
    """`parallel` worker processes of the same study, each joined to the parent run."""
    from mlproject.tracking.queries import absolute_tracking_uri

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // job.tune.parallel)
    env = hand_run_to({**os.environ, "MLFLOW_TRACKING_URI": absolute_tracking_uri(), "OMP_NUM_THREADS": str(threads)},
                      None)
    print(f"tune: {job.tune.parallel} workers share study {job.study_name!r}, {threads} torch thread(s) each",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="mlproject-tune-") as tmp:
        procs = []
        for i in range(job.tune.parallel):
            config = Path(tmp) / f"worker{i}.yaml"
            config.write_text(job.config_text(parallel=1, parent_run_id=parent.run_id, study_name=job.study_name,
                                              storage=storage, sampler_seed=job.tune.sampler_seed + i,
                                              then_compare=False), encoding="utf-8")
            procs.append(subprocess.Popen([sys.executable, "-m", "mlproject", "tune", "--config", str(config),
                                           "--num-threads", str(threads)], env=env))
        try:
            codes = [p.wait() for p in procs]
        except BaseException:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait()
            raise
    if any(codes):
        raise MlprojectError(f"tune: worker exit codes {codes}; re-run the same command to continue the study")


def run_tune(job: TuneJob) -> TuneOutcome | None:
    """Open (or continue) the study and its parent run, run the trials, log the best."""
    from mlproject.data.prepare import prepare_data
    from mlproject.errors import require_extra

    require_extra("optuna", "tune", "tune")  # before any run exists: nothing is left FAILED
    from mlproject.tracking import client, tune_runs

    storage = tune_runs.study_storage(job.tune.storage)
    data = prepare_data(job.run.data)  # once, before any worker; the effective values need it
    check_collapse(job, data)  # before any run exists
    if job.tune.parent_run_id:  # one more worker of a study another process opened
        parent = tune_runs.join_parent(job.tune.parent_run_id, job.study_name)
        _optimize(job, _study(job, storage, job.tune.sampler_seed), parent, data)
        return None

    parent = tune_runs.open_parent(experiment=job.experiment, fallback_experiment=job.run.former_default_experiment,
                                   run_name=job.tune.parent_run_name or job.study_name, study_name=job.study_name,
                                   tags={})
    print(f"tune: study {job.study_name!r} ({storage.split('@')[-1]}), parent run {parent.run_id} "
          f"in experiment {parent.experiment_name!r}", flush=True)
    try:
        params = job.run.flat(SEARCHABLE)
        params.update(flatten({k: v for k, v in to_dict(job.tune).items()
                               if k not in ("parent_run_id", "storage")}, "tune"))
        params["tune.search_space"] = json.dumps(job.space_raw, sort_keys=True)
        client.log_params_once(parent.run_id, params)
        client.log_text(parent.run_id, job.config_text(), Artifact.TUNE_CONFIG)
        study = _study(job, storage, job.tune.sampler_seed)
        if job.tune.parallel > 1:
            _run_workers(job, parent, storage)
        else:
            _optimize(job, study, parent, data)
        outcome = _record_best(job, study, parent)
    except BaseException as exc:
        client.set_status(parent.run_id, RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED)
        raise
    if job.tune.then_compare:
        outcome.compare_run_id = _then_compare(job, outcome)
    print(result_line({"step": "tune", "run_id": parent.run_id, "experiment_id": parent.experiment_id,
                       "experiment_name": parent.experiment_name, "status": RunStatus.FINISHED,
                       "study": job.study_name, "best_value": outcome.best_value,
                       "best_params": outcome.best_params, "trials": outcome.trials,
                       "compare_run_id": outcome.compare_run_id}), flush=True)
    return outcome


def effective_params(trial: Any) -> dict[str, Any]:
    """The values the trial's run used (its `effective_*` user attributes), else the sampled ones
    (a trial from before they were recorded, or one that failed before its run)."""
    return {k: trial.user_attrs.get(f"effective_{k}", v) for k, v in trial.params.items()}


def effective_study(study: Any) -> Any:
    """An in-memory copy of `study`'s finished trials with the effective values as params, so
    that the importances and plots rank what ran, not what was sampled."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.trial import TrialState

    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    params = [effective_params(t) for t in finished]
    distributions: dict[str, Any] = {}
    for name in {k for p in params for k in p}:
        seen = [p[name] for p in params if name in p]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen)
        if numeric and all(isinstance(v, int) for v in seen):
            distributions[name] = IntDistribution(min(seen), max(seen))
        elif numeric:
            distributions[name] = FloatDistribution(float(min(seen)), float(max(seen)))
        else:
            distributions[name] = CategoricalDistribution(list(dict.fromkeys(seen)))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line for a view
    try:
        view = optuna.create_study(direction="minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    view.add_trials([optuna.trial.create_trial(
        state=t.state, value=t.value if t.state == TrialState.COMPLETE else None, params=p,
        distributions={k: distributions[k] for k in p}, user_attrs=t.user_attrs,
        intermediate_values=t.intermediate_values) for t, p in zip(finished, params)])
    return view


def _record_best(job: TuneJob, study: Any, parent: Any) -> TuneOutcome:
    """Best value and (effective) params, trial counts and Optuna's plots on the parent; FINISHED."""
    from optuna.trial import TrialState

    from mlproject.tracking import client

    trials = study.get_trials(deepcopy=False)
    names = {TrialState.COMPLETE: TrialOutcome.COMPLETE, TrialState.PRUNED: TrialOutcome.PRUNED,
             TrialState.FAIL: TrialOutcome.FAIL}
    counts = {str(o): sum(t.state == s for t in trials) for s, o in names.items()}
    if counts[TrialOutcome.COMPLETE] == 0:
        raise MlprojectError(f"tune: study {job.study_name!r} has no complete trial ({counts}); "
                             "widen the search space or raise --n-trials")
    best = study.best_trial
    params = effective_params(best)
    metrics = {"best_value": best.value, "best_trial": best.number,
               **{f"trials_{k.lower()}": v for k, v in counts.items()},
               **{f"best/{k}": float(v) for k, v in params.items() if isinstance(v, (int, float))}}
    client.log_metrics(parent.run_id, metrics, step=len(trials))
    client.set_tags(parent.run_id, {Tag.BEST_PARAMS: json.dumps(params, sort_keys=True),
                                    Tag.BEST_RUN_ID: str(best.user_attrs.get("run_id", ""))})
    client.log_text(parent.run_id, json.dumps({"value": best.value, "params": params, "trial": best.number,
                                               "run_id": best.user_attrs.get("run_id")}, indent=2),
                    Artifact.BEST_PARAMS)
    _log_plots(effective_study(study), parent.run_id)
    client.set_status(parent.run_id, RunStatus.FINISHED)
    print(f"tune: best {job.tune.metric} {best.value:.4f} at trial {best.number}: {json.dumps(params)} "
          f"({counts['COMPLETE']} {TrialOutcome.COMPLETE}, {counts['PRUNED']} {TrialOutcome.PRUNED}, "
          f"{counts['FAIL']} {TrialOutcome.FAIL})", flush=True)
    return TuneOutcome(parent.run_id, job.study_name, float(best.value), params, counts)


def _log_plots(study: Any, run_id: str) -> None:
    """Optuna's optimization history and parameter importances (of `study`, the effective view)
    as PNG artifacts under plots/."""
    import matplotlib.pyplot as plt

    from mlproject.tracking.tune_runs import log_figure

    for name in TUNE_PLOTS:
        try:
            figure = tune_figure(study, name)
        except (ValueError, RuntimeError) as exc:  # e.g. importances need two complete trials
            print(f"note: no {name} plot: {exc}", file=sys.stderr)
            continue
        log_figure(run_id, figure, f"{Artifact.PLOTS}/{name}.png")
        plt.close(figure)


TUNE_PLOTS = ("optimization_history", "param_importances")


def tune_figure(study: Any, name: str) -> Any:
    """One of Optuna's matplotlib charts of `study`, made honest: integer trial ticks, the
    legend outside the data, and a layout that makes room for long labels (Optuna's own cut
    `train.learning_rate` to `rning_rate`)."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    import optuna.visualization.matplotlib as ovm
    from matplotlib.ticker import MaxNLocator

    draw = {"optimization_history": ovm.plot_optimization_history,
            "param_importances": ovm.plot_param_importances}[name]
    with warnings.catch_warnings():  # "experimental" since Optuna 2.2; the plots are stable
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = draw(study)
    figure = ax.figure
    if name == "optimization_history":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers: no 2.5th trial
        ax.set_title(f"optimization history: {ax.get_ylabel() or 'objective'} by trial")
    # Optuna's own title stays on the importance plot (it names the chart already).
    if ax.get_legend() is not None:  # outside the data, right of the axes
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    # Constrained layout makes room for tick labels and the outside legend instead of
    # cutting them; it also applies when MLflow saves the figure without bbox_inches.
    figure.set_layout_engine("constrained")
    figure.set_size_inches(max(figure.get_figwidth(), 8.0), figure.get_figheight())
    return figure


def _then_compare(job: TuneJob, outcome: TuneOutcome) -> str:
    """The best config re-trained over seeds: a compare with the tuned model version alone."""
    from mlproject.research.compare import CompareJob, run_compare
    from mlproject.research.config import CompareConfig

    best = trial_config(job.run, outcome.best_params, source="best trial")
    compare = CompareConfig(models=[best.model.model_version], seeds=list(job.tune.compare_seeds),
                            parent_run_name=f"{job.study_name}-best")
    compare.validate()
    return run_compare(CompareJob(best, compare, source=f"best of study {job.study_name}")).parent_run_id
