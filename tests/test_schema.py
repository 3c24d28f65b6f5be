"""The run store's contract is pinned: a renamed tag, artifact path or state fails here, not
in a user's `--resume` against a store written by an earlier release.

If a value below has to change, the old one must still be read (a migration), and this test
is the place that says so. The scan at the end keeps `mlproject.schema` the only spelling of
every tag key and artifact path in `src/`.
"""

from __future__ import annotations

import ast
from enum import StrEnum
from pathlib import Path

import pytest

from mlproject import schema
from mlproject.schema import (AliasOutcome, Artifact, ChildAction, ExperimentKind, ExperimentTag, PatchState, RunRole, RunStatus, StepStatus, SweepKind, Tag,
                              TrainStatus, TrialOutcome)

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mlproject"

GOLDEN: dict[type[StrEnum], dict[str, str]] = {
    Tag: {
        "PARENT": "mlflow.parentRunId",
        "PROJECT_ENTRY_POINT": "mlflow.project.entryPoint",
        "PROJECT_BACKEND": "mlflow.project.backend",
        "NOTE": "mlflow.note.content",
        "ROLE": "mlproject.role",
        "ERROR": "mlproject.error",
        "TRAIN_STATUS": "mlproject.train_status",
        "CHANGED_PARAMS": "mlproject.changed_params",
        "PROFILE": "mlproject.profile",
        "SWEEP_KIND": "mlproject.sweep_kind",
        "SWEEP_KEY": "mlproject.sweep_key",
        "GROUP": "mlproject.group",
        "GROUPS": "mlproject.groups",
        "METRICS": "mlproject.metrics",
        "ABLATION_AXIS": "mlproject.ablation_axis",
        "ABLATION_VALUE": "mlproject.ablation_value",
        "MODEL_VERSION": "mlproject.model_version",
        "SEED": "mlproject.seed",
        "SUPERSEDED_BY": "mlproject.superseded_by",
        "RECIPE": "mlproject.recipe",
        "PER_MODEL_OVERRIDE": "mlproject.per_model_override",
        "PLOTTED_RUN_ID": "mlproject.plotted_run_id",
        "LADDER_GROUP": "mlproject.ladder.group",
        "LADDER_RUNG": "mlproject.ladder.rung",
        "LADDER_BUDGET": "mlproject.ladder.budget",
        "LADDER_FIT_STATUS": "mlproject.ladder.fit_status",
        "STUDY": "mlproject.study",
        "TRIAL_NUMBER": "mlproject.trial_number",
        "TRIAL_STATE": "mlproject.trial_state",
        "TUNE_WORKER": "mlproject.tune_worker",
        "BEST_PARAMS": "mlproject.best_params",
        "BEST_RUN_ID": "mlproject.best_run_id",
        "BEST_MODEL_URI": "mlproject.best_model_uri",
        "REGISTERED_MODEL_URI": "mlproject.registered_model_uri",
        "BEST_ALIAS_DECISION": "mlproject.best_alias.decision",
        "BEST_ALIAS_REASON": "mlproject.best_alias.reason",
        "ADAPTIVE_VERDICT": "mlproject.adaptive.verdict",
        "ADAPTIVE_DESIGN": "mlproject.adaptive.design",
        "EVALUATED_RUN": "mlproject.evaluated_run",
        "STEP_RUN": "mlproject.step_run",
        "EVAL_CHECKPOINT": "mlproject.eval.checkpoint",
        "EVAL_CHECKPOINT_SHA256": "mlproject.eval.checkpoint_sha256",
        "HF_EXPORT_CLASS": "mlproject.hf_export_class",
        "PIPELINE": "mlproject.pipeline",
        "RECORD": "mlproject.record",
        "RECORD_PATCH": "mlproject.record.patch",
        "DATA_DIGEST": "mlproject.data.digest",
        "DATA_TOKENIZER_HASH": "mlproject.data.tokenizer_hash",
        "LEASE_HOLDER": "mlproject.lease.holder",
        "LEASE_HEARTBEAT": "mlproject.lease.heartbeat",
        "REPRODUCES": "mlproject.reproduces",
        "REPRODUCED_BY": "mlproject.reproduced_by",
        "REPRODUCE_VERDICT": "mlproject.reproduce.verdict",
    },
    Artifact: {
        "PLAN_CONFIG": "plan/config.yaml",
        "PLAN_FILE": "plan/sweep.json",
        "CHECKPOINTS": "checkpoints",
        "TOKENIZER": "tokenizer/tokenizer.json",
        "RESOLVED_CONFIG": "config/resolved.yaml",
        "HF_EXPORT": "hf",
        "GENERATIONS": "generations.json",
        "PLOTS": "plots",
        "LOGS": "logs",
        "PREVIEWS": "previews",
        "RESULTS_JSONL": "results.jsonl",
        "RESULTS_CSV": "results.csv",
        "SWEEP_SUMMARY": "summary.json",
        "SWEEP_CONFIG": "sweep.yaml",
        "LADDER_JSON": "ladder.json",
        "TUNE_CONFIG": "tune.yaml",
        "BEST_PARAMS": "best_params.json",
        "SOURCE_JSON": "source/source.json",
        "PATCH": "source/patch.diff",
        "PATCH_SUMMARY": "source/patch_summary.txt",
        "UNTRACKED": "source/untracked/",
        "ENVIRONMENT_JSON": "environment/environment.json",
        "REQUIREMENTS": "environment/requirements.txt",
        "REPRODUCE_REPORT": "reproduce/report.txt",
        "REPRODUCE_OVERLAY": "reproduce/overlay.png",
    },
    RunRole: {"SWEEP_PARENT": "sweep_parent", "SWEEP_CHILD": "sweep_child", "TUNE_PARENT": "tune_parent",
              "PIPELINE": "pipeline", "EVALUATION": "evaluation"},
    SweepKind: {"COMPARE": "compare", "ABLATION": "ablation", "TUNE": "tune", "LADDER": "ladder"},
    RunStatus: {"SCHEDULED": "SCHEDULED", "RUNNING": "RUNNING", "FINISHED": "FINISHED", "FAILED": "FAILED",
                "KILLED": "KILLED"},
    TrainStatus: {"FINISHED": "finished", "EARLY_STOPPED": "early_stopped", "INTERRUPTED": "interrupted",
                  "STOPPED": "stopped"},
    ChildAction: {"DONE": "done", "RESUME": "resume", "RESTART": "restart", "NEW": "new", "LEASED": "leased"},
    StepStatus: {"PENDING": "pending", "RUNNING": "running", "SUCCEEDED": "succeeded", "REUSED": "reused",
                 "SKIPPED": "skipped", "FAILED": "failed", "INTERRUPTED": "interrupted"},
    TrialOutcome: {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED", "FAIL": "FAIL"},
    PatchState: {"CLEAN": "clean", "LOGGED": "logged", "SUMMARISED": "summarised", "NONE": "none"},
    AliasOutcome: {"MOVED": "moved", "STAYED": "stayed", "UNGATED": "ungated"},
    ExperimentTag: {"KIND": "mlflow.experimentKind"},
    ExperimentKind: {"CUSTOM_MODEL_DEVELOPMENT": "custom_model_development"},
}


def test_every_enum_of_the_schema_is_pinned():
    enums = {obj for obj in vars(schema).values()
             if isinstance(obj, type) and issubclass(obj, StrEnum) and obj is not StrEnum}
    assert enums == set(GOLDEN), f"pin these in GOLDEN too: {sorted(e.__name__ for e in enums - set(GOLDEN))}"


@pytest.mark.parametrize("enum", list(GOLDEN), ids=lambda e: e.__name__)
def test_every_value_is_the_released_one(enum):
    assert {m.name: m.value for m in enum} == GOLDEN[enum]


def test_prefix_built_keys_and_paths_keep_their_shape():
    assert schema.eval_checkpoint_sha256_tag("bpb") == "mlproject.eval.bpb.checkpoint_sha256"
    assert schema.step_status_tag("train") == "mlproject.step.train.status"
    assert schema.evidence_tag("p_adjusted") == "mlproject.evidence.p_adjusted"
    assert schema.step_run_id_tag("train") == "mlproject.step.train.run_id"
    assert schema.checkpoint_artifact("last") == "checkpoints/last.pt"
    assert schema.TERMINAL_STATUSES == ("FINISHED", "FAILED", "KILLED")
    assert schema.LEASE_RELEASED == "released"


def test_members_are_the_plain_strings_mlflow_stores():
    assert f"tags.`{Tag.ROLE}` = '{RunRole.SWEEP_PARENT}'" == "tags.`mlproject.role` = 'sweep_parent'"
    assert {Tag.SEED: "1"} == {"mlproject.seed": "1"}


# MLflow calls that take an artifact path: a string literal among their arguments is one spelled by hand.
ARTIFACT_CALLS = {"log_files", "log_artifact", "log_artifacts", "log_text", "log_figure", "log_table", "load_text",
                  "list_artifacts", "artifact_files", "download_artifacts"}


def _literals(tree: ast.AST) -> list[ast.Constant]:
    """String constants of a module, f-string parts included, docstrings left out."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def _artifact_arguments(tree: ast.AST) -> list[ast.Constant]:
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "attr", getattr(node.func, "id", None)) in ARTIFACT_CALLS]
    return [arg for call in calls for arg in [*call.args, *(k.value for k in call.keywords)]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]


def _spelled_elsewhere() -> list[str]:
    """`file:line value` for every string literal in src/ (outside the schema) that spells a tag
    key (or starts one), an artifact path, an MLflow run status, or any literal given to an
    artifact call.

    Folder names that are also plain words (`hf`, `logs`, `plots`, `checkpoints`) count only as
    arguments of artifact calls: elsewhere they name local folders or JSON keys.
    """
    values = ({m.value for m in Tag} | {m.value for m in Artifact if "/" in m.value or "." in m.value}
              | {m.value for m in RunStatus})
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "schema.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        spelled = [node for node in _literals(tree)
                   if node.value in values or node.value.startswith(("mlproject.", "mlflow.note", "mlflow.parent"))]
        for node in [*spelled, *_artifact_arguments(tree)]:
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.value!r}")
    return sorted(set(found))


def test_no_tag_key_or_artifact_path_is_spelled_outside_the_schema():
    found = _spelled_elsewhere()
    assert not found, "use mlproject.schema (Tag, Artifact, RunStatus, or its key functions) instead of:\n" + "\n".join(found)
