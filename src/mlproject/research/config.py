"""Configs of the research steps: compare, ablation, tune and plot (the `compare:`, `ablation:`,
`tune:` and `plot:` sections of their YAML files; the model/data/train/tracking sections are
RunConfig's), and the stages of a planned sweep.

They live apart from the steps' code so that the CLI builds its flags from them without
importing that code (statistics, plotting, Optuna)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from mlproject.config import check_types, field
from mlproject.errors import ConfigError
from mlproject.research.power import check_alpha


@dataclass
class SweepConfig:
    """What every sweep (compare, ablation) shares: how its children run, what the parent does
    with them afterwards, and the checks of its seeds.

    A sweep's config derives from SweepConfig and then from a dataclass of its own fields
    (`CompareConfig(SweepConfig, CompareFields)`): dataclasses list the fields of the last base
    first, so a sweep's own fields (what it varies, its seeds) lead its YAML section and its
    `--help`, and these follow.
    """

    section: ClassVar[str]  # the YAML section, named in errors
    if TYPE_CHECKING:
        seeds: list[int]  # a field of every sweep, with its own default and help

    parallel: int = field(1, help="children trained at once in separate processes")
    resume: bool = field(False, help="skip FINISHED children, resume KILLED/FAILED ones, add the rest")
    parent_run_name: str | None = field(None, help="name of the parent run")
    register_best: str | None = field(None, help="register the best child's model under this name (alias `best`)")
    eval_datasets: list[str] = field(default_factory=list, help="evaluate every child on these datasets "
                                     "after training; the parent aggregates eval/<dataset>/bpb")
    register_best_ungated: bool = field(False, help="with register_best: give `best` to the lowest-loss child "
                                                    "even when its group does not beat the baseline")
    alpha: float = field(0.05, help="significance level of the paired tests (Holm-adjusted over the candidates), "
                                    "of the power figures and of the gated `best` alias")
    effect: float | None = field(None, help="the difference (in the metric's units) the seeds-needed figure "
                                            "refers to (default: the observed difference)")
    target: list[str] = field(default_factory=list, help="metric=value (e.g. val_loss=5.3): tokens, FLOPs and "
                              "seconds at which each child first reaches it, per group and against the baseline")
    target_alpha: float = field(0.01, help="level of the one-sided test that a group's mean final metric is "
                                           "beyond each target (modded-nanogpt's record rule)")
    adaptive_seeds: int | None = field(None, metavar="MAX", help="add seeds in rounds until a group-sequential "
                                       "test (O'Brien-Fleming spending at alpha) finds each candidate better or "
                                       "worse than the baseline, or MAX seeds ran")
    verbose: bool = field(False, aliases=("-v",), help="print every child's full output, prefixed with its name "
                          "(default: one line as each child starts and one as it ends, with its figure; the full "
                          "output is the child run's logs/train.log)")
    log_file: str | None = field(None, help="also append every child's full output, prefixed with its name, "
                                            "to this file")

    def validate(self) -> None:
        check_types(self, source=self.section)
        self.validate_own()
        if not self.seeds:
            raise ConfigError(f"{self.section}: seeds is empty; expected at least one seed")
        if min(self.seeds) < 0:
            raise ConfigError(f"{self.section}: seeds={self.seeds}: seed {min(self.seeds)} must be >= 0")
        # paired statistics match children by seed, and two equal children are one trained twice
        _refuse_duplicates(self.section, "seeds", self.seeds)
        if self.parallel < 1:
            raise ConfigError(f"{self.section}: parallel={self.parallel} must be >= 1")
        check_alpha(self.alpha, f"{self.section}: alpha")
        if self.effect is not None and not (math.isfinite(self.effect) and self.effect != 0):
            raise ConfigError(f"{self.section}: effect={self.effect} must be a finite non-zero difference")
        check_alpha(self.target_alpha, f"{self.section}: target_alpha")
        for text in self.target:
            parse_target(text, self.section)
        if self.adaptive_seeds is not None:
            self._check_adaptive(self.adaptive_seeds)

    def _check_adaptive(self, max_seeds: int) -> None:
        # The design's first look is at the starting seeds, and a paired t needs two of them.
        if len(self.seeds) < 2:
            raise ConfigError(f"{self.section}: adaptive_seeds={max_seeds} needs at least 2 starting seeds, "
                              f"got seeds={self.seeds}")
        if max_seeds < len(self.seeds):
            raise ConfigError(f"{self.section}: adaptive_seeds={max_seeds} is below the starting seed count "
                              f"{len(self.seeds)} (seeds={self.seeds}); expected at least {len(self.seeds)}")

    def validate_own(self) -> None:
        """The checks of the sweep's own fields, run before the shared ones."""


# The metrics an evaluation logs at its step (training/trainer.py `evaluate`): a target must name one.
EVAL_METRICS = ("val_loss", "val_ppl", "val_token_acc", "val_bpb")


def parse_target(text: str, section: str = "sweep") -> tuple[str, float]:
    """`metric=value` as (metric, value), or a one-line error naming the bad target."""
    metric, sep, raw = str(text).partition("=")
    metric = metric.strip()
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not sep or not math.isfinite(value):
        raise ConfigError(f"{section}: target={text!r}: expected metric=value with a finite value, e.g. val_loss=5.3")
    if metric not in EVAL_METRICS:
        raise ConfigError(f"{section}: target={text!r}: no evaluation logs {metric!r}; expected one of "
                          f"{', '.join(EVAL_METRICS)}")
    return metric, value


def _refuse_duplicates(section: str, name: str, values: list) -> None:
    """A one-line error naming the first value given twice: a sweep trains each group once."""
    seen: set = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{section}: {name}={values} has {value} more than once; give each once")
        seen.add(value)


@dataclass
class CompareFields:
    """The fields of a comparison: the model versions, the seeds and how they are compared."""

    models: list[Literal["gpt2", "gpt3"]] = field(default_factory=lambda: ["gpt2", "gpt3"],
                                                  help="model versions to compare (the first is the baseline)")
    seeds: list[int] = field(default_factory=lambda: [42, 43, 44], help="seeds; each model runs every seed")
    fair_recipe: bool = field(True, help="one training recipe for every model (false: per-version recipes)")
    metrics: list[str] = field(default_factory=lambda: ["val_loss_best"], aliases=("--metric",),
                               help="child summary metrics to aggregate (mean, std, 95% CI, paired test)")


@dataclass
class CompareConfig(SweepConfig, CompareFields):
    """A fair comparison of model versions: one child run per model x seed."""

    section: ClassVar[str] = "compare"

    def validate_own(self) -> None:
        if not self.models:
            raise ConfigError("compare: models is empty; expected at least one of gpt2, gpt3")
        _refuse_duplicates("compare", "models", self.models)


@dataclass
class AblationFields:
    """The fields of an ablation: the axis, its values and the seeds."""

    ablation_axis: str = field("norm_type", help="model field to vary (see research.ablation.AXES)")
    ablation_values: list[str] = field(default_factory=lambda: ["layernorm", "rmsnorm"],
                                       help="values of the axis, parsed by the axis's type")
    seeds: list[int] = field(default_factory=lambda: [42, 43], help="seeds; each value runs every seed")
    metrics: list[str] = field(default_factory=lambda: ["val_loss_best"], aliases=("--metric",),
                               help="child summary metrics to aggregate")


@dataclass
class AblationConfig(SweepConfig, AblationFields):
    """One architecture axis varied over values: one child run per value x seed."""

    section: ClassVar[str] = "ablation"

    def validate_own(self) -> None:
        if not self.ablation_values:
            raise ConfigError("ablation: ablation_values is empty")


@dataclass
class LadderFields:
    """The fields of a scaling ladder: the groups, the rungs (model sizes), the budget rule, the seeds."""

    models: list[Literal["gpt2", "gpt3"]] = field(default_factory=lambda: ["gpt2", "gpt3"],
                                                  help="model versions to ladder (the first is the baseline); "
                                                       "ignored when ladder_axis is set")
    ladder_axis: str | None = field(None, help="instead of models: one architecture axis (as ablate) whose "
                                               "values are the groups")
    ladder_values: list[str] = field(default_factory=list, help="values of ladder_axis, the baseline first")
    rungs: list[str] = field(default_factory=lambda: ["1x2x32", "2x2x32", "2x2x48", "3x4x64", "4x4x80"],
                             help="model sizes, small to large: preset names or n_layer x n_head x d_model "
                                  "(e.g. 2x4x64)")
    tokens_per_param: float = field(20.0, help="budget rule: tokens = this x non-embedding params "
                                               "(Chinchilla's ratio); unused with tokens or iso_flop")
    tokens: int | None = field(None, help="budget rule: every rung trains this many tokens")
    iso_flop: list[float] = field(default_factory=list, help="budget rule: compute budgets (FLOPs); each trains "
                                                             "every rung to that budget (iso-FLOP profiles)")
    seeds: list[int] = field(default_factory=lambda: [42, 43], help="seeds; every group x rung runs each")
    holdout: int = field(1, help="the largest rungs (budgets in iso_flop mode) trained but left out of the fit")
    metric: str = field("val_bpb_best", help="child summary metric fitted against compute (bits per byte: "
                                             "groups with different tokenizers compare)")
    bootstrap: int = field(1000, help="bootstrap resamples of the seeds within each rung (at least 1000)")
    bootstrap_seed: int = field(0, help="seed of the bootstrap's random draws")


# A fit of E, A and alpha needs a residual: four points at least.
MIN_FITTED_RUNGS = 4


@dataclass
class LadderConfig(SweepConfig, LadderFields):
    """A scaling ladder: one child run per group x rung x seed, fits of L(C) = E + A C^-alpha."""

    section: ClassVar[str] = "ladder"

    def validate_own(self) -> None:
        if self.ladder_axis is None and not self.models:
            raise ConfigError("ladder: models is empty; expected at least one of gpt2, gpt3")
        if self.ladder_axis is not None and len(self.ladder_values) < 1:
            raise ConfigError(f"ladder: ladder_axis={self.ladder_axis} needs ladder_values; expected at least one")
        _refuse_duplicates("ladder", "models", self.models)
        _refuse_duplicates("ladder", "rungs", self.rungs)
        if self.tokens is not None and self.iso_flop:
            raise ConfigError(f"ladder: tokens={self.tokens} and iso_flop={self.iso_flop} are two budget rules; "
                              "give one of them")
        if not (math.isfinite(self.tokens_per_param) and self.tokens_per_param > 0):
            raise ConfigError(f"ladder: tokens_per_param={self.tokens_per_param} must be > 0")
        if self.tokens is not None and self.tokens < 1:
            raise ConfigError(f"ladder: tokens={self.tokens} must be >= 1")
        if any(not (math.isfinite(c) and c > 0) for c in self.iso_flop):
            raise ConfigError(f"ladder: iso_flop={self.iso_flop}: every budget must be a positive number of FLOPs")
        if self.iso_flop and sorted(self.iso_flop) != list(self.iso_flop):
            raise ConfigError(f"ladder: iso_flop={self.iso_flop} must increase; list the budgets small to large")
        if self.bootstrap < 1000:
            raise ConfigError(f"ladder: bootstrap={self.bootstrap} must be >= 1000 resamples")
        if self.holdout < 0:
            raise ConfigError(f"ladder: holdout={self.holdout} must be >= 0")
        self._check_fit_points()
        if self.adaptive_seeds is not None:
            raise ConfigError(f"ladder: adaptive_seeds={self.adaptive_seeds} is not supported; a ladder's seeds are fixed")

    def _check_fit_points(self) -> None:
        """Enough rungs (budgets in iso_flop mode) left for the fit once the held-out ones are set aside."""
        what, count = ("iso_flop budgets", len(self.iso_flop)) if self.iso_flop else ("rungs", len(self.rungs))
        if self.iso_flop and len(self.rungs) < 3:
            raise ConfigError(f"ladder: iso_flop needs at least 3 rungs per budget for its parabola in log N, "
                              f"got {len(self.rungs)} ({', '.join(self.rungs)})")
        fitted = count - self.holdout
        if self.iso_flop and fitted < 2:
            raise ConfigError(f"ladder: {count} {what} with holdout={self.holdout} leave {fitted} to fit; the "
                              "exponent of N_opt needs at least 2")
        if not self.iso_flop and fitted < MIN_FITTED_RUNGS:
            raise ConfigError(f"ladder: {count} {what} with holdout={self.holdout} leave {fitted} to fit; "
                              f"E + A C^-alpha has three parameters and needs at least {MIN_FITTED_RUNGS} fitted "
                              f"rungs (a residual)")


@dataclass
class PlotConfig:
    """What to plot and where the numbers come from (tracking store, or a results file)."""

    parent_run_id: str | None = field(None, help="plot this compare/ablation/ladder parent run")
    experiment_name: str | None = field(None, help="plot the latest parent run of this experiment")
    results: list[str] | None = field(None, help="offline: results.jsonl/csv files (this suite's or the original's "
                                                 "columns) instead of the tracking store; their rows are pooled")
    kind: Literal["auto", "compare", "ablation", "curves", "ladder"] = field("auto", help="chart type")
    metric: str = field("val_loss_best", help="summary metric of the bar chart")
    output_dir: str | None = field(None, help="where PNG and CSV files are written (default: plots/<experiment> under "
                                              "$MLPROJECT_LOCAL_DIR or ./mlproject-outputs)")
    title: str | None = field(None, help="chart title")
    plot_name: str | None = field(None, help="file name of the bar chart under output_dir "
                                             "(default: <kind>_<metric>.png)")
    summary_csv: str | None = field(None, help="also write the original suite's summary CSV here: per group n, "
                                               "mean, std, min, max (profile original: output_dir/"
                                               "summary_<kind>_<metric>.csv)")
    log_to_run: bool = field(True, help="log the plots to the parent run under plots/")
    profile: Literal["default", "original"] = field(
        "default", cli=False, help="original: the original's summary CSV too (--profile)")

    def validate(self) -> None:
        check_types(self, source="plot")


@dataclass
class TuneConfig:
    """The `tune:` section: how many trials, how they are sampled, pruned and shared."""

    n_trials: int = field(20, help="trials of the study in all; a re-run of the same study continues up to this")
    timeout: float | None = field(None, help="start no new trial after this many seconds")
    parallel: int = field(1, help="worker processes sharing the study")
    study_name: str | None = field(None, help="Optuna study (default: tune-<hash of config, space, experiment>); "
                                              "the same name continues the study")
    storage: str | None = field(None, help="SQLAlchemy URL of the study (default: a SQLite file beside a "
                                           "SQLite tracking store)")
    sampler: Literal["tpe", "random"] = field("tpe", help="Optuna sampler")
    pruner: Literal["median", "successive_halving", "none"] = field("median", help="prunes on each eval's val_loss")
    metric: str = field("val_loss_best", help="child summary metric to minimize")
    sampler_seed: int = field(0, help="seed of the sampler (worker i of --parallel uses seed + i)")
    then_compare: bool = field(False, help="re-train the best config over --compare-seeds as a compare")
    compare_seeds: list[int] = field(default_factory=lambda: [42, 43, 44], help="seeds of --then-compare")
    parent_run_name: str | None = field(None, help="name of the parent run")
    parent_run_id: str | None = field(None, help="join this tune parent as one more worker of its study "
                                                 "(another process, container or mapped task)")

    def validate(self) -> None:
        check_types(self, source="tune")
        if self.n_trials < 1:
            raise ConfigError(f"tune: n_trials={self.n_trials} must be >= 1")
        if self.parallel < 1:
            raise ConfigError(f"tune: parallel={self.parallel} must be >= 1")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"tune: timeout={self.timeout} must be > 0 seconds")
        if self.then_compare:
            _refuse_duplicates("tune", "compare_seeds", self.compare_seeds)


@dataclass
class SweepStageConfig:
    """`compare/ablate --plan-only | --aggregate`: one stage of a sweep whose children a scheduler
    trains itself (the child stage is `train --child-run-id`)."""

    plan_only: bool = field(False, metavar="BOOL", help="create the parent and SCHEDULED children, print their "
                                                        "run ids, train nothing")
    aggregate: str | None = field(None, metavar="PARENT_RUN_ID", help="statistics, results and plots of a "
                                                                      "planned parent from its children's runs")

    def validate(self) -> None:
        check_types(self, source="sweep stages")
        if self.plan_only and self.aggregate:
            raise ConfigError("--plan-only and --aggregate are two stages of a sweep; give one of them")


@dataclass
class ChildRunConfig:
    """`train --child-run-id`: the child stage of a planned sweep (its config is planned on its run)."""

    child_run_id: str | None = field(None, metavar="CHILD_RUN_ID", help="train (or resume) a sweep child planned "
                                                                        "by `compare/ablate --plan-only`")
    # `--run-id` names the source run of generate/evaluate/export-hf; in train it would read as
    # "train from that run". Accepted only to be refused with the right flag named, never aliased.
    run_id: str | None = field(None, hidden=True)

    def validate(self) -> None:
        check_types(self, source="train")
        if self.run_id is not None:
            raise ConfigError(f"train: --run-id {self.run_id} is not a train flag; the planned sweep child to train "
                              f"is --child-run-id {self.run_id} (--run-id names the source run of "
                              "generate/evaluate/export-hf)")


@dataclass
class ReproduceConfig:
    """`reproduce`: re-run a recorded run and judge whether its numbers came back."""

    run_id: str | None = field(None, metavar="RUN_ID", help="the run to reproduce")
    rtol: float = field(1e-4, help="largest relative difference of a metric that is `within tolerance`")
    source: Literal["installed", "record"] = field(
        "installed", help="installed: run this copy's code and report how it differs from the record; "
                          "record: run the recorded commit and patch from a temporary git worktree")
    allow_data_change: bool = field(False, help="reproduce even when the token cache or tokenizer differs "
                                                "from the recorded one")
    num_threads: int | None = field(None, help="train with this many torch threads instead of the recorded "
                                               "count (bitwise equality is then not expected)")
    seeds: list[int] | None = field(None, help="sweep parent: re-make only the children of these seeds "
                                              "(default: every FINISHED child)")
    max_steps: int | None = field(None, help="re-make only the first N optimizer steps (with the full run's "
                                             "learning-rate schedule) and judge the metrics up to step N")
    margin: float | None = field(None, help="sweep parent: the largest group-mean difference that counts as the "
                                            "same result in the TOST equivalence test (default: the original "
                                            "sweep's minimum detectable difference)")

    def validate(self) -> None:
        check_types(self, source="reproduce")
        if self.margin is not None and not self.margin > 0:
            raise ConfigError(f"reproduce: margin={self.margin} must be > 0")
        if not self.run_id:
            raise ConfigError("reproduce: --run-id is required; expected the id of the run to reproduce")
        if not self.rtol >= 0:
            raise ConfigError(f"reproduce: rtol={self.rtol} must be >= 0")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"reproduce: num_threads={self.num_threads} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"reproduce: max_steps={self.max_steps} must be >= 1")
