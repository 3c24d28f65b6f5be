"""`mlproject`: one CLI whose subcommands are the research steps.

Every subcommand is one row of `COMMANDS`: a handler, the config dataclasses its flags are
generated from (`mlproject.config.add_arguments`: `--max-steps` and `--max_steps` both work,
aliases too) and its help. A handler loads its config (a YAML `--config` file, overridden by
explicit flags) and calls one application or research function; the MLproject entry points,
the pipeline runner and the Airflow DAG all run these same commands.
Bad input ends with one line on stderr (`mlproject: error: ...`) and exit code 2.

Only the config modules are imported to build the parser; each handler imports the code it
runs (torch, MLflow, statistics), so `mlproject --help` and bad flags answer at once.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mlproject.app.config import RunConfig, ServerConfig
from mlproject.config import add_arguments, build_sections, cli_flags, from_dict, section_overrides
from mlproject.data.config import DataConfig, DataRuntimeConfig, PreviewConfig, RegistryConfig
from mlproject.errors import ConfigError, MlprojectError, missing_extra
from mlproject.inference.config import GenerateConfig
from mlproject.inference.eval_config import EvaluateConfig, ExportConfig
from mlproject.model.config import HFImportConfig, OriginalImportConfig, SummaryConfig
from mlproject.orchestration.config import PipelineOptions
from mlproject.orchestration.original_format import expand_cli_argv
from mlproject.profiles import PROFILE_ENV, ProfileOption, active_profile, command_defaults
from mlproject.research.config import (AblationConfig, ChildRunConfig, CompareConfig, LadderConfig, PlotConfig,
                                       ReproduceConfig, SweepStageConfig, TuneConfig)
from mlproject.schema import RunStatus

T = TypeVar("T")
Handler = Callable[[argparse.Namespace], object]
# argparse reads `-1e-3` as a flag (its number pattern has no exponent): `--lr -1e-3` would
# fail with "expected one argument" instead of the config's own message (`-inf` too: the config
# names it as the non-finite value it is).
_NEGATIVE_NUMBER = re.compile(r"^-((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)
# What argparse itself already reads as a negative number (its documented rule: plain integers
# and decimals), so the fallback below only touches the forms it would misread.
_PLAIN_NEGATIVE = re.compile(r"^-\d+$|^-\d*\.\d+$")


def accept_negative_numbers(parser: argparse.ArgumentParser) -> bool:
    """Make `parser` read `-1e-3` as a value through argparse's private number pattern.

    False where this argparse has no such attribute (a later Python may drop it); `main` then
    joins such values to their flag (`--lr=-1e-3`), which argparse reads through its public syntax.
    """
    if not hasattr(parser, "_negative_number_matcher"):
        return False
    parser._negative_number_matcher = _NEGATIVE_NUMBER
    return True


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """`--flag -1e-3` as `--flag=-1e-3`: the public spelling of a value that starts with a dash."""
    out: list[str] = []
    for token in argv:
        previous = out[-1] if out else ""
        if (_NEGATIVE_NUMBER.match(token) and not _PLAIN_NEGATIVE.match(token)
                and previous.startswith("--") and "=" not in previous):
            out[-1] = f"{previous}={token}"
        else:
            out.append(token)
    return out


def _flags(args: argparse.Namespace, cls: type[T]) -> T:
    """Config `cls` from the flags alone (a section no YAML file holds)."""
    return from_dict(cls, section_overrides(args, cls), source="flags")


def _section(args: argparse.Namespace, name: str, cls: type[T]) -> T:
    """Config `cls` from section `name` of the `--config` YAML, explicit flags overriding it."""
    return build_sections({name: cls}, yaml_path=args.config, args=args, defaults=command_defaults(args))[name]


# ----------------------------------------------------------------------------- handlers

def _datasets(args: argparse.Namespace) -> None:
    from mlproject.data.registry import format_registry_table

    print(format_registry_table(cache_dir=_flags(args, RegistryConfig).cache_dir))


def _dataloaders(args: argparse.Namespace) -> None:
    from mlproject.data.preview import preview_batches

    data, preview = _flags(args, DataConfig), _flags(args, PreviewConfig)
    preview_batches(data, block_size=preview.block_size, batch_size=preview.batch_size,
                    num_batches=preview.preview_batches, seed=preview.seed, runtime=_flags(args, DataRuntimeConfig))


def _summary(args: argparse.Namespace) -> None:
    from mlproject.model.summary import run_summary

    from mlproject.data.registry import get_spec
    from mlproject.training.resolve import padded_vocab

    cfg = _flags(args, SummaryConfig)
    # A run's embedding has its tokenizer's rows (padded), so the counts are the dataset's.
    vocab = padded_vocab(cfg.vocab_size or get_spec(cfg.dataset).vocab_size)
    run_summary(presets=cfg.presets, model_versions=cfg.model_versions, block_size=cfg.block_size, vocab_size=vocab)


def _import_hf(args: argparse.Namespace) -> None:
    from mlproject.model.hf import load_hf_dir
    from mlproject.model.checkpoint import save_model_checkpoint

    cfg = _flags(args, HFImportConfig)
    model = load_hf_dir(cfg.model_dir)
    save_model_checkpoint(cfg.output, model)
    print(f"wrote {cfg.output} ({model.num_params() / 1e6:.1f}M parameters)")


def _import_original(args: argparse.Namespace) -> None:
    from mlproject.model.checkpoint import read_torch_file, save_checkpoint
    from mlproject.model.original import from_original, is_original_checkpoint, read_run_config

    cfg = _flags(args, OriginalImportConfig)
    raw = read_torch_file(cfg.checkpoint)
    if not is_original_checkpoint(raw):
        raise MlprojectError(f"{cfg.checkpoint} is not a checkpoint of the original suite (no model_state)")
    run_config = read_run_config(cfg.run_config) if cfg.run_config else None
    model, state = from_original(raw, cfg.checkpoint, run_config)
    save_checkpoint(cfg.output, state)
    print(f"wrote {cfg.output} ({model.config.model_version}, {model.num_params() / 1e6:.1f}M parameters)")


def _train(args: argparse.Namespace) -> int:
    child = _flags(args, ChildRunConfig)
    if child.child_run_id:  # the child stage of a planned sweep: its config is on its run
        if args.config:
            raise MlprojectError(f"--child-run-id {child.child_run_id} trains with the config planned on that run; "
                                 "drop --config (flags such as --num-threads still apply)")
        from mlproject.research.sweep import train_child

        status = train_child(child.child_run_id, args)
        return {RunStatus.FINISHED: 0, RunStatus.KILLED: 130}.get(status, 1)

    cfg = RunConfig.load(args.config, args)  # validate before importing torch and mlflow
    from mlproject.tracking.train_tracker import train_tracked

    outcome = train_tracked(cfg)
    return 130 if outcome.status == RunStatus.KILLED else 0  # interrupted (resumable): not a success


def _generate(args: argparse.Namespace) -> None:
    from mlproject.app.generate import run_generate
    from mlproject.protocol import process_run_id

    cfg = _section(args, "generate", GenerateConfig)
    local = cfg.checkpoint and not cfg.checkpoint.startswith("runs:/") and not (cfg.run_id or cfg.model_uri)
    if local and not process_run_id():  # nothing to fetch or record: MLflow's import alone took seconds
        run_generate(cfg, None)
        return
    from mlproject.tracking.model_store import MlflowModelStore

    run_generate(cfg, MlflowModelStore())


def _evaluate(args: argparse.Namespace) -> None:
    from mlproject.app.evaluate import run_evaluate
    from mlproject.tracking.model_store import MlflowModelStore

    run_evaluate(_section(args, "evaluate", EvaluateConfig), MlflowModelStore())


def _export_hf(args: argparse.Namespace) -> None:
    from mlproject.app.evaluate import run_export_hf
    from mlproject.tracking.model_store import MlflowModelStore

    run_export_hf(_flags(args, ExportConfig), MlflowModelStore())


def _sweep_stage(args: argparse.Namespace, job: Any) -> bool:
    """`--aggregate PARENT` or `--plan-only` of compare/ablate (`job`: its job class); False when
    neither is given."""
    stage = _flags(args, SweepStageConfig)
    if not (stage.aggregate or stage.plan_only):
        return False
    from mlproject.research.sweep import aggregate_sweep, plan_sweep

    if stage.aggregate:
        aggregate_sweep(stage.aggregate, plots=True)
    else:
        sweep = job.load(args.config, args)
        settings = getattr(sweep, "compare", None) or getattr(sweep, "ablation", None) or sweep.ladder
        if settings.adaptive_seeds is not None:  # its rounds are decided by the looks, in one process
            raise ConfigError(f"--plan-only plans a fixed set of seeds, but adaptive_seeds={settings.adaptive_seeds} "
                              "adds seeds in rounds; run the sweep without --plan-only (in the DAG: "
                              "MLPROJECT_SWEEP_TASKS=single)")
        plan_sweep(sweep.spec())
    return True


def _compare(args: argparse.Namespace) -> None:
    from mlproject.research.compare import CompareJob, run_compare

    if not _sweep_stage(args, CompareJob):
        run_compare(CompareJob.load(args.config, args))


def _ablate(args: argparse.Namespace) -> None:
    from mlproject.research.ablation import AblationJob, run_ablation

    if not _sweep_stage(args, AblationJob):
        run_ablation(AblationJob.load(args.config, args))


def _ladder(args: argparse.Namespace) -> None:
    from mlproject.research.ladder import LadderJob, run_ladder

    if not _sweep_stage(args, LadderJob):
        run_ladder(LadderJob.load(args.config, args))


def _tune(args: argparse.Namespace) -> None:
    from mlproject.research.tune import TuneJob, run_tune

    run_tune(TuneJob.load(args.config, args))


def _plot(args: argparse.Namespace) -> None:
    from mlproject.research.plots import run_plot

    run_plot(_section(args, "plot", PlotConfig))


def _reproduce(args: argparse.Namespace) -> int:
    from mlproject.research.reproduce_step import run_reproduce

    return run_reproduce(_flags(args, ReproduceConfig))  # 1 when the numbers did not come back


def _pipeline(args: argparse.Namespace) -> int:
    from mlproject.orchestration.runner import run_pipeline

    profile = _flags(args, ProfileOption).profile
    if profile is not None:  # the steps run as their own commands: they read it from the environment
        os.environ[PROFILE_ENV] = active_profile(profile)
    return run_pipeline(_flags(args, PipelineOptions), known_flags=known_flags)


def _server(args: argparse.Namespace) -> int:
    from mlproject.app.server import run_server

    return run_server(_flags(args, ServerConfig))


# ----------------------------------------------------------------------------- the command table

@dataclass(frozen=True)
class Command:
    """One subcommand: its handler, the config sections its flags come from, its help.

    `config` is the help of its `--config` YAML file ("" when it reads none); section names are
    the help's group titles (and the YAML's section names where the command reads one).
    """

    handler: Handler
    sections: Mapping[str, type]
    help: str
    config: str = ""


_RUN_YAML = "YAML file with sections model/data/train/tracking; flags override it"

COMMANDS: dict[str, Command] = {
    "datasets": Command(_datasets, {"datasets": RegistryConfig},
                        "list the dataset registry and which token caches exist"),
    "dataloaders": Command(_dataloaders, {"data": DataConfig, "runtime": DataRuntimeConfig, "preview": PreviewConfig},
                           "build a dataset's token cache and preview batches"),
    "summary": Command(_summary, {"summary": SummaryConfig},
                       "build model presets, print parameters and FLOPs, run a step"),
    "import-hf": Command(_import_hf, {"import-hf": HFImportConfig},
                         "convert a local Hugging Face GPT-2/Llama folder to a checkpoint"),
    "import-original": Command(_import_original, {"import-original": OriginalImportConfig},
                               "convert a checkpoint of the original suite (<name>.last.pt) to ours"),
    "train": Command(_train, {**RunConfig.SECTIONS, "sweep child": ChildRunConfig, "profile": ProfileOption},
                     "train one model, tracked in MLflow", config=_RUN_YAML),
    "generate": Command(_generate, {"generate": GenerateConfig, "profile": ProfileOption},
                        "generate text from a run, a models:/ URI or a checkpoint",
                        config="YAML file with a `generate` section"),
    "evaluate": Command(_evaluate, {"evaluate": EvaluateConfig},
                        "evaluate a run, a models:/ URI or a checkpoint: loss, ppl, bpb, accuracy with "
                        "confidence intervals; lm-eval tasks", config="YAML file with an `evaluate` section"),
    "export-hf": Command(_export_hf, {"export-hf": ExportConfig},
                         "export a run, a models:/ URI or a checkpoint to a Hugging Face folder"),
    "compare": Command(_compare, {**RunConfig.SECTIONS, "compare": CompareConfig, "sweep stages": SweepStageConfig,
                                  "profile": ProfileOption},
                       "fair comparison of model versions across seeds (nested runs)", config=_RUN_YAML),
    "ablate": Command(_ablate, {**RunConfig.SECTIONS, "ablation": AblationConfig, "sweep stages": SweepStageConfig,
                                "profile": ProfileOption},
                      "ablation of one architecture axis across seeds (nested runs)", config=_RUN_YAML),
    "ladder": Command(_ladder, {**RunConfig.SECTIONS, "ladder": LadderConfig, "sweep stages": SweepStageConfig},
                      "scaling ladder: groups x model sizes x seeds (nested runs), fits of L(C) = E + A C^-alpha "
                      "with bootstrap intervals, checked on held-out rungs", config=_RUN_YAML),
    "tune": Command(_tune, {**RunConfig.SECTIONS, "tune": TuneConfig},
                    "hyperparameter search with Optuna; each trial a nested run", config=_RUN_YAML),
    "plot": Command(_plot, {"plot": PlotConfig, "profile": ProfileOption},
                    "plot a compare/ablation from the tracking store",
                    config="YAML file with a `plot` section"),
    "reproduce": Command(_reproduce, {"reproduce": ReproduceConfig},
                         "re-run a run from its record (source, environment, data) and judge whether its "
                         "metrics came back; exit code 1 when they differ"),
    "pipeline": Command(_pipeline, {"pipeline": PipelineOptions, "profile": ProfileOption},
                        "run the steps of a pipeline YAML in dependency order"),
    "server": Command(_server, {"server": ServerConfig},
                      "start an MLflow tracking server (127.0.0.1 by default)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in `COMMANDS`, its flags generated from the config sections."""
    parser = argparse.ArgumentParser(prog="mlproject", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        accept_negative_numbers(p)
        if command.config:
            p.add_argument("--config", help=command.config)
        for title, cls in command.sections.items():
            add_arguments(p, cls, title=f"{title} ({cls.__name__})")
    return parser


def known_flags(command: str) -> set[str]:
    """Every flag spelling `mlproject <command>` accepts: what the keys of an original config's
    `args` are checked against."""
    spec = COMMANDS[command]
    flags = {flag for cls in spec.sections.values() for flag in cli_flags(cls)}
    return flags | {"--config"} if spec.config else flags


def _tracking_failure(exc: BaseException) -> str | None:
    """One line for an error caused by the tracking server not answering (None for others)."""
    if "mlflow" not in sys.modules:  # no tracking was involved
        return None
    from mlproject.tracking.store import connection_failure

    return connection_failure(exc)


def _report(message: str, exc: BaseException | None = None) -> None:
    """Print `message` as one scrubbed line on stderr; with MLPROJECT_DEBUG=1 the traceback of `exc`
    first (scrubbed too: a URI with a password ends many tracebacks)."""
    import os

    from mlproject.secrets import scrub

    if exc is not None and os.environ.get("MLPROJECT_DEBUG") == "1":
        import traceback

        print(scrub("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
    line = " ".join(str(message).split())  # one line, whatever the exception's text holds
    print(scrub(f"mlproject: error: {line}"), file=sys.stderr)


def _unexpected(exc: BaseException) -> str:
    """The one line of an exception no check anticipated: its type and first line, never a traceback."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    detail = f": {first[:300]}" if first else ""
    return (f"unexpected {type(exc).__name__}{detail} (set MLPROJECT_DEBUG=1 for the traceback; "
            "please report it)")


# Third-party progress bars (MLflow's "Downloading artifacts", Hugging Face downloads,
# transformers' and lm-eval's tqdm bars) redraw with carriage returns: in a log or a CI console
# each becomes several lines per artifact. Off when stdout is not a terminal (a sweep's children,
# `mlflow run`, the DAG's containers inherit the setting); a user's own value wins.
QUIET_PROGRESS_ENV = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                      "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


def quiet_progress_bars(stream: Any) -> None:
    """Turn the third-party progress bars off unless `stream` is a terminal."""
    isatty = getattr(stream, "isatty", None)
    if not (isatty and isatty()):
        for name, value in QUIET_PROGRESS_ENV.items():
            os.environ.setdefault(name, value)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every way out goes through here: bad input ends with one line and exit code 2,
    any other failure with one line and 1, an interrupt with 130; no line carries a credential.

    `argv` None means this is the program (the console script, `python -m mlproject`): the
    process ends when this returns, so the objects that torch and MLflow created are frozen out of
    the garbage collector first. Its passes over them at interpreter shutdown took ~1 s of every
    command (0.15 s frozen); atexit handlers (MLflow's last metric batches) still run.
    """
    code = _run(argv)
    if argv is None:
        gc.freeze()
    return code


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # `--config <a step file of the original suite>`: its script's flags, by its rules
        argv = expand_cli_argv(argv, known_flags) if argv and argv[0] in COMMANDS else argv
    except MlprojectError as exc:
        _report(str(exc), exc)
        _finish_outer_run(_adopt_outer_run(None), 2)
        return 2
    if not accept_negative_numbers(argparse.ArgumentParser()):
        argv = join_negative_values(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):  # a bad flag under `mlflow run`: its run is not left FAILED and empty
            _finish_outer_run(_adopt_outer_run(None), 2)
        raise
    from mlproject.secrets import quiet_mlflow_run_links

    quiet_mlflow_run_links()
    quiet_progress_bars(sys.stdout)
    outer = _adopt_outer_run(args.command)
    code = _run_command(args)
    _finish_outer_run(outer, code)
    return code


def _run_command(args: argparse.Namespace) -> int:
    """The command's exit code; every exception ends as one line."""
    try:
        result = COMMANDS[args.command].handler(args)
    except MlprojectError as exc:
        _report(str(exc), exc)
        return 2
    except KeyboardInterrupt:
        print("mlproject: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one scrubbed line, never a traceback
        extra = missing_extra(exc)  # an unguarded import of an optional extra: an environment to fix
        _report(extra or _tracking_failure(exc) or _unexpected(exc), exc)
        return 2 if extra else 1
    return result if isinstance(result, int) else 0


def _adopt_outer_run(command: str | None) -> Any:
    """The run `mlflow run` made for this process, if any (`tracking.project_run`: MLflow is
    imported only when a run was handed over)."""
    from mlproject.protocol import process_run_id

    if not process_run_id():
        return None
    from mlproject.tracking.project_run import adopt

    return adopt(command)


def _finish_outer_run(outer: Any, code: int) -> None:
    if outer is not None:
        from mlproject.tracking.project_run import finish

        finish(outer, code)


if __name__ == "__main__":
    raise SystemExit(main())
