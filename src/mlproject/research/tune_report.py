"""What a finished search reports on its parent run: the best value and (effective) params,
trial counts, and Optuna's optimization-history and parameter-importance plots, drawn from
the values the trials ran with (`effective_study`), not those sampled."""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlproject.errors import MlprojectError
from mlproject.research.tune_space import TuneJob
from mlproject.schema import Artifact, RunStatus, Tag, TrialOutcome

if TYPE_CHECKING:
    from mlproject.tracking.client import ParentRun


@dataclass
class TuneOutcome:
    parent_run_id: str
    study_name: str
    best_value: float
    best_params: dict[str, Any]
    trials: dict[str, int]       # trials by state: COMPLETE, PRUNED, FAIL
    compare_run_id: str | None = None

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


def record_best(job: TuneJob, study: Any, parent: ParentRun) -> TuneOutcome:
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

    from mlproject.tracking.client import log_figure

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


