"""`mlproject tune`: hyperparameter search with Optuna, every trial a nested MLflow run.

The job and its search space are research/tune_space.py; what a finished search logs on its
parent is research/tune_report.py. The sampler is TPE by default; the pruner (median or
successive halving) sees the val loss of every evaluation through a trainer callback, so bad
trials stop early. The study lives in a SQL database (`tracking/store.study_storage`): several
workers (`--parallel` processes of the sweep engine's worker pool, containers, Airflow mapped
tasks with `--parent-run-id`) share it, and a re-run with the same study name continues it up
to `--n-trials` in all, under the same parent run (`tracking/client.open_parent`, the opener
sweeps use too). `--then-compare` re-trains the best config over seeds as a compare.

A trial ends COMPLETE, PRUNED or FAIL (`TrialOutcome`) on its run's tag, the console and its
`step: trial` result line; a pruned trial stops after an evaluation (never the last one),
FINISHED with its metrics. Its MLflow params and `effective_<name>` user attributes are the
values it ran with.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlproject.config import flatten, to_dict
from mlproject.errors import MlprojectError
from mlproject.protocol import result_line
from mlproject.research.tune_report import TuneOutcome, record_best
from mlproject.research.tune_space import SEARCHABLE, TuneJob, check_collapse, effective_values, trial_config
from mlproject.schema import Artifact, RunRole, RunStatus, SweepKind, Tag, TrialOutcome

if TYPE_CHECKING:
    from mlproject.tracking.client import ParentRun

__all__ = ["TuneJob", "TuneOutcome", "run_tune"]


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


def _optimize(job: TuneJob, study: Any, parent: ParentRun, data: Any) -> None:
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


def _run_workers(job: TuneJob, parent: ParentRun, storage: str) -> None:
    """`parallel` worker processes of the same study (the sweep engine's pool), each joined to the parent run."""
    from mlproject.research.sweep.pool import WorkerProcess, run_processes, threads_per_worker, worker_env

    threads = threads_per_worker(job.tune.parallel)
    env = worker_env(threads, None)
    print(f"tune: {job.tune.parallel} workers share study {job.study_name!r}, {threads} torch thread(s) each",
          flush=True)
    codes: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="mlproject-tune-") as tmp:
        def start(i: int) -> WorkerProcess[int]:
            config = Path(tmp) / f"worker{i}.yaml"
            config.write_text(job.config_text(parallel=1, parent_run_id=parent.run_id, study_name=job.study_name,
                                              storage=storage, sampler_seed=job.tune.sampler_seed + i,
                                              then_compare=False), encoding="utf-8")
            return WorkerProcess(i, f"worker{i}", [sys.executable, "-m", "mlproject", "tune", "--config", str(config),
                                                   "--num-threads", str(threads)], env)

        def finish(worker: WorkerProcess[int]) -> None:
            codes[worker.item] = worker.proc.returncode

        run_processes(range(job.tune.parallel), job.tune.parallel, start, finish)
    if any(codes.values()):
        raise MlprojectError(f"tune: worker exit codes {[codes[i] for i in sorted(codes)]}; "
                             "re-run the same command to continue the study")


def run_tune(job: TuneJob) -> TuneOutcome | None:
    """Open (or continue) the study and its parent run, run the trials, log the best."""
    from mlproject.data.prepare import prepare_data
    from mlproject.errors import require_extra

    require_extra("optuna", "tune", "tune")  # before any run exists: nothing is left FAILED
    from mlproject.tracking import client
    from mlproject.tracking.store import study_storage

    storage = study_storage(job.tune.storage)
    data = prepare_data(job.run.data, job.run.runtime)  # once, before any worker; the effective values need it
    check_collapse(job, data)  # before any run exists
    if job.tune.parent_run_id:  # one more worker of a study another process opened
        parent = client.join_parent(job.tune.parent_run_id, {Tag.STUDY: job.study_name}, f"study {job.study_name!r}")
        _optimize(job, _study(job, storage, job.tune.sampler_seed), parent, data)
        return None

    # A re-run of the study continues its parent (resume), as it continues the study.
    parent = client.open_parent(experiment=job.experiment, run_name=job.tune.parent_run_name or job.study_name,
                                role=RunRole.TUNE_PARENT, match={Tag.STUDY: job.study_name}, resume=True,
                                tags={Tag.SWEEP_KIND: SweepKind.TUNE},
                                fallback_experiment=job.run.former_default_experiment)
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
        outcome = record_best(job, study, parent)
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


def _then_compare(job: TuneJob, outcome: TuneOutcome) -> str:
    """The best config re-trained over seeds: a compare with the tuned model version alone."""
    from mlproject.research.compare import CompareJob, run_compare
    from mlproject.research.config import CompareConfig

    best = trial_config(job.run, outcome.best_params, source="best trial")
    compare = CompareConfig(models=[best.model.model_version], seeds=list(job.tune.compare_seeds),
                            parent_run_name=f"{job.study_name}-best")
    compare.validate()
    return run_compare(CompareJob(best, compare, source=f"best of study {job.study_name}")).parent_run_id
