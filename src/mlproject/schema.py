"""The run store's contract: every tag key, artifact path, run role and state the suite writes.

The tracking store is the suite's database. `--resume`, `plot`, `tune` re-runs and the pipeline
find their runs again by these strings, so a value here, once released, never changes: a
renamed tag would silently orphan the runs users already have. `tests/test_schema.py` pins
every value, and fails when a tag or artifact string is spelled anywhere else in `src/`.

Members are `StrEnum`s: they are the plain strings MLflow stores (`Tag.ROLE == "mlproject.role"`),
so they go straight into tag dicts, filter strings and JSON. This module imports nothing from
the package, so every layer may use it.
"""

from __future__ import annotations

from enum import StrEnum


class Tag(StrEnum):
    """Run tag keys (MLflow's own where the suite reads or writes them)."""

    # MLflow's own keys
    PARENT = "mlflow.parentRunId"
    NOTE = "mlflow.note.content"
    PROJECT_ENTRY_POINT = "mlflow.project.entryPoint"  # set by `mlflow run` on the run it creates
    PROJECT_BACKEND = "mlflow.project.backend"         # set by `mlflow run` once the command started
    # what a run is
    ROLE = "mlproject.role"                        # RunRole
    ERROR = "mlproject.error"                      # a run that failed: the one-line reason
    TRAIN_STATUS = "mlproject.train_status"        # TrainStatus of the trainer's last session
    CHANGED_PARAMS = "mlproject.changed_params"    # {param: value of the latest session}
    PROFILE = "mlproject.profile"                  # the defaults the run started from: default | original
    # sweeps (compare, ablation) and their children
    SWEEP_KIND = "mlproject.sweep_kind"            # SweepKind
    SWEEP_KEY = "mlproject.sweep_key"              # hash of the sweep's config minus seed and the varied field
    GROUP = "mlproject.group"                      # model version (compare) or axis value (ablation)
    GROUPS = "mlproject.groups"                    # parent: JSON list of groups, baseline first
    METRICS = "mlproject.metrics"                  # parent: JSON list of aggregated metrics
    ABLATION_AXIS = "mlproject.ablation_axis"
    ABLATION_VALUE = "mlproject.ablation_value"
    MODEL_VERSION = "mlproject.model_version"
    SEED = "mlproject.seed"
    SUPERSEDED_BY = "mlproject.superseded_by"      # an interrupted parent: the parent that took over its children
    RECIPE = "mlproject.recipe"                    # compare: the shared recipe
    PER_MODEL_OVERRIDE = "mlproject.per_model_override"
    PLOTTED_RUN_ID = "mlproject.plotted_run_id"    # a plot step's run: the parent it plotted
    # scaling ladders (research/ladder.py): a child's group, rung and (iso-FLOP) compute budget
    LADDER_GROUP = "mlproject.ladder.group"
    LADDER_RUNG = "mlproject.ladder.rung"
    LADDER_BUDGET = "mlproject.ladder.budget"
    LADDER_FIT_STATUS = "mlproject.ladder.fit_status"  # parent: JSON {group: FitStatus} of the L(C) fits
    # tune
    STUDY = "mlproject.study"                      # parent and trials: the Optuna study name
    TRIAL_NUMBER = "mlproject.trial_number"        # trial run: Optuna's trial number
    TRIAL_STATE = "mlproject.trial_state"          # trial run: TrialOutcome
    TUNE_WORKER = "mlproject.tune_worker"          # trial run: host:pid of the worker that ran it
    BEST_PARAMS = "mlproject.best_params"          # parent: JSON of the best trial's params
    # best model and registry
    BEST_RUN_ID = "mlproject.best_run_id"
    BEST_MODEL_URI = "mlproject.best_model_uri"
    REGISTERED_MODEL_URI = "mlproject.registered_model_uri"
    BEST_ALIAS_DECISION = "mlproject.best_alias.decision"  # sweep parent: AliasOutcome of --register-best
    BEST_ALIAS_REASON = "mlproject.best_alias.reason"      # sweep parent: why, in one line
    # adaptive seeds (research/adaptive.py)
    ADAPTIVE_VERDICT = "mlproject.adaptive.verdict"  # sweep parent: better | worse | no difference ... (per candidate)
    ADAPTIVE_DESIGN = "mlproject.adaptive.design"    # sweep parent: JSON seeds, boundaries, alpha of the looks
    # evaluation and export
    EVALUATED_RUN = "mlproject.evaluated_run"      # on a separate evaluation run: the run it evaluated
    EVAL_CHECKPOINT = "mlproject.eval.checkpoint"  # where the evaluated file came from (runs:/, models:/ or a path)
    EVAL_CHECKPOINT_SHA256 = "mlproject.eval.checkpoint_sha256"  # sha256 of the checkpoint file last evaluated
    HF_EXPORT_CLASS = "mlproject.hf_export_class"  # the transformers class, or "custom code (trust_remote_code=True)"
    # pipelines
    PIPELINE = "mlproject.pipeline"                # a pipeline run: the pipeline's name
    # `mlflow run`'s own run, deleted when the step logged elsewhere (tracking/project_run.py)
    STEP_RUN = "mlproject.step_run"                # the run the step logged into instead
    # the run record
    RECORD = "mlproject.record"                    # the record format version: its presence marks a run that has one
    RECORD_PATCH = "mlproject.record.patch"        # PatchState
    DATA_DIGEST = "mlproject.data.digest"
    DATA_TOKENIZER_HASH = "mlproject.data.tokenizer_hash"
    # leases (tracking/lease.py): one process trains a run at a time
    LEASE_HOLDER = "mlproject.lease.holder"        # JSON {"host", "pid", "start", "timeout"} of the holder
    LEASE_HEARTBEAT = "mlproject.lease.heartbeat"  # epoch seconds of its last heartbeat, or LEASE_RELEASED
    # reproduce
    REPRODUCES = "mlproject.reproduces"            # on a reproduction: the id of the run it re-made
    REPRODUCED_BY = "mlproject.reproduced_by"      # on the original: its latest reproduction's run id
    REPRODUCE_VERDICT = "mlproject.reproduce.verdict"


class ExperimentTag(StrEnum):
    """Experiment tag keys (MLflow's own)."""

    # What MLflow's UI shows an experiment as; its kind selector writes this key, and the UI
    # reads it where its GenAI / model-training switch is not in charge.
    KIND = "mlflow.experimentKind"


class ExperimentKind(StrEnum):
    """Values of `ExperimentTag.KIND` (MLflow's own)."""

    CUSTOM_MODEL_DEVELOPMENT = "custom_model_development"  # training runs, not traces (genai_development)


def eval_checkpoint_sha256_tag(suite: str) -> str:
    """Per evaluation suite: sha256 of the checkpoint file that suite last evaluated."""
    return f"mlproject.eval.{suite}.checkpoint_sha256"


def evidence_tag(field: str) -> str:
    """A model version registered by a gated `--register-best`: one field of its evidence
    (metric, difference, ci_low, ci_high, p_adjusted, n, ...)."""
    return f"mlproject.evidence.{field}"


class AliasOutcome(StrEnum):
    """What a sweep's `--register-best` did with the alias `best`."""

    MOVED = "moved"        # a candidate beat the baseline at the adjusted alpha
    STAYED = "stayed"      # no candidate did: the baseline's best child
    UNGATED = "ungated"    # --register-best-ungated: the lowest-loss child, no evidence asked


def step_status_tag(step_id: str) -> str:
    """A pipeline run: the StepStatus of one of its steps."""
    return f"mlproject.step.{step_id}.status"


def step_run_id_tag(step_id: str) -> str:
    """A pipeline run: the run id one of its steps made."""
    return f"mlproject.step.{step_id}.run_id"


class Artifact(StrEnum):
    """Artifact paths inside a run (files, or folders where the name says so)."""

    PLAN_CONFIG = "plan/config.yaml"               # a sweep child's config as planned (model/data/train/tracking)
    PLAN_FILE = "plan/sweep.json"                  # a sweep parent's plan: kind, groups, metrics, children in order
    CHECKPOINTS = "checkpoints"                    # folder: last.pt, best.pt (also the local folder's name)
    TOKENIZER = "tokenizer/tokenizer.json"
    RESOLVED_CONFIG = "config/resolved.yaml"
    HF_EXPORT = "hf"                               # folder: the Hugging Face export
    GENERATIONS = "generations.json"               # the evaluation's generations table
    PLOTS = "plots"                                # folder: a sweep's or a study's figures
    LOGS = "logs"                                  # folder: a child's train.log, a pipeline's step logs
    PREVIEWS = "previews"                          # folder: --preview-every's decoded samples, step_<N>.txt
    RESULTS_JSONL = "results.jsonl"                # a sweep parent: one row per child
    RESULTS_CSV = "results.csv"
    SWEEP_SUMMARY = "summary.json"                 # a sweep parent: the statistics
    SWEEP_CONFIG = "sweep.yaml"                    # a sweep parent: the job's config
    LADDER_JSON = "ladder.json"                    # a ladder parent: the fits, per-rung statistics, held-out check
    TUNE_CONFIG = "tune.yaml"                      # a tune parent: the job's config
    BEST_PARAMS = "best_params.json"               # a tune parent: the best trial
    # the run record
    SOURCE_JSON = "source/source.json"
    PATCH = "source/patch.diff"
    PATCH_SUMMARY = "source/patch_summary.txt"
    UNTRACKED = "source/untracked/"                # folder: prefix of the untracked files' copies
    ENVIRONMENT_JSON = "environment/environment.json"
    REQUIREMENTS = "environment/requirements.txt"
    # reproduce
    REPRODUCE_REPORT = "reproduce/report.txt"
    REPRODUCE_OVERLAY = "reproduce/overlay.png"


def preview_artifact(step: int) -> str:
    """The artifact path of the decoded sample of `--preview-every` at `step`."""
    return f"{Artifact.PREVIEWS}/step_{step:07d}.txt"


def checkpoint_artifact(kind: str) -> str:
    """The artifact path of a checkpoint: `checkpoints/last.pt` or `checkpoints/best.pt`."""
    return f"{Artifact.CHECKPOINTS}/{kind}.pt"


class RunRole(StrEnum):
    """Values of `Tag.ROLE`."""

    SWEEP_PARENT = "sweep_parent"
    SWEEP_CHILD = "sweep_child"                    # also a tune trial (a child of the study's parent)
    TUNE_PARENT = "tune_parent"
    PIPELINE = "pipeline"
    EVALUATION = "evaluation"


class SweepKind(StrEnum):
    """Values of `Tag.SWEEP_KIND`."""

    COMPARE = "compare"
    ABLATION = "ablation"
    TUNE = "tune"
    LADDER = "ladder"


class RunStatus(StrEnum):
    """MLflow's run statuses, as the suite sets and reads them."""

    SCHEDULED = "SCHEDULED"                        # a planned sweep child, never started
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"                              # interrupted on purpose (resumable)


TERMINAL_STATUSES = (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)


class TrainStatus(StrEnum):
    """How the trainer's session ended (values of `Tag.TRAIN_STATUS`)."""

    FINISHED = "finished"
    EARLY_STOPPED = "early_stopped"
    INTERRUPTED = "interrupted"
    STOPPED = "stopped"                            # a callback asked to stop (a pruned tune trial)


class ChildAction(StrEnum):
    """What a sweep does with a planned child when it (re)starts."""

    DONE = "done"                                  # finished: nothing to do
    RESUME = "resume"                              # from the last checkpoint in its artifacts
    RESTART = "restart"                            # started but never reached a checkpoint
    LEASED = "leased"                              # another live process trains it: skip and wait
    NEW = "new"


class StepStatus(StrEnum):
    """A pipeline step's state (and the pipeline's own) in the runner's report and `step_status_tag`."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    REUSED = "reused"                              # a resumed pipeline kept an earlier success
    SKIPPED = "skipped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"                    # the pipeline as a whole, stopped by a signal


class TrialOutcome(StrEnum):
    """A tune trial's state, in one vocabulary everywhere: the `Tag.TRIAL_STATE` value, the
    console line that ends a trial, the trial's result line and the tune result's counts.
    Optuna's state names (a name of its own, so that it never shadows
    `optuna.trial.TrialState` in a module that uses both). The trial's MLflow run status:

        COMPLETE -> FINISHED
        PRUNED   -> FINISHED  (stopped on purpose after an evaluation; its metrics stand)
        FAIL     -> FAILED    (KILLED when a signal stopped the search)
    """

    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"


class PatchState(StrEnum):
    """Values of `Tag.RECORD_PATCH`: what the run record kept of uncommitted changes."""

    CLEAN = "clean"
    LOGGED = "logged"                              # a patch or untracked files
    SUMMARISED = "summarised"                      # too large to log
    NONE = "none"                                  # no git

# The heartbeat tag's value once its holder let the run go.
LEASE_RELEASED = "released"
