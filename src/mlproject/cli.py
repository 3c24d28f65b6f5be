"""`mlproject`: one CLI whose subcommands are the research steps.

Every subcommand is a thin shell around one library function: the MLproject entry points,
the pipeline runner and the Airflow DAG all run these same commands. Flags are generated
from the config dataclasses (`mlproject.config.add_arguments`), so `--max-steps` and
`--max_steps` both work and a YAML `--config` file is overridden by explicit flags.
Bad input ends with one line on stderr (`mlproject: error: ...`) and exit code 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence

from mlproject.config import add_arguments
from mlproject.errors import MlprojectError

Handler = Callable[[argparse.Namespace], object]
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _run_sections(parser: argparse.ArgumentParser) -> None:
    """Flags of every section of a training run (model, data, train, tracking)."""
    from mlproject.app.config import RunConfig

    parser.add_argument("--config", help="YAML file with sections model/data/train/tracking; flags override it")
    for name, cls in RunConfig.SECTIONS.items():
        add_arguments(parser, cls, title=f"{name} ({cls.__name__})")


# ----------------------------------------------------------------------------- handlers

def _datasets(args: argparse.Namespace) -> None:
    from mlproject.data.registry import format_registry_table

    print(format_registry_table(cache_dir=args.cache_dir))


def _dataloaders(args: argparse.Namespace) -> None:
    from mlproject.config import from_dict, section_overrides
    from mlproject.data.config import DataConfig
    from mlproject.data.preview import preview_batches

    data_cfg = from_dict(DataConfig, section_overrides(args, DataConfig), source="flags")
    preview_batches(data_cfg, block_size=args.block_size, batch_size=args.batch_size,
                    num_batches=args.preview_batches, seed=args.seed)


def _summary(args: argparse.Namespace) -> None:
    from mlproject.model.summary import run_summary

    run_summary(presets=args.presets, model_versions=args.model_versions, block_size=args.block_size)


def _import_hf(args: argparse.Namespace) -> None:
    from mlproject.model.hf import load_hf_dir
    from mlproject.model.checkpoint import save_model_checkpoint

    model = load_hf_dir(args.model_dir)
    save_model_checkpoint(args.output, model)
    print(f"wrote {args.output} ({model.num_params() / 1e6:.1f}M parameters)")


def _train(args: argparse.Namespace) -> int:
    from mlproject.app.config import RunConfig

    if args.run_id:  # the child stage of a planned sweep: its config is on its run
        if args.config:
            raise MlprojectError(f"--run-id {args.run_id} trains with the config planned on that run; "
                                 "drop --config (flags such as --num-threads still apply)")
        from mlproject.research.sweep import train_child

        status = train_child(args.run_id, args)
        return {"FINISHED": 0, "KILLED": 130}.get(status, 1)

    cfg = RunConfig.load(args.config, args)  # validate before importing torch and mlflow
    from mlproject.tracking.train_tracker import train_tracked

    outcome = train_tracked(cfg)
    return 130 if outcome.status == "KILLED" else 0  # interrupted (resumable): not a success


def _generate(args: argparse.Namespace) -> None:
    from mlproject.config import build_sections
    from mlproject.inference.config import GenerateConfig
    from mlproject.app.generate import run_generate
    from mlproject.tracking.model_store import MlflowModelStore

    cfg = build_sections({"generate": GenerateConfig}, yaml_path=args.config, args=args)["generate"]
    run_generate(cfg, MlflowModelStore())


def _sweep_stage(args: argparse.Namespace) -> bool:
    """`--aggregate PARENT` or `--plan-only` of compare/ablate; False when neither is given."""
    from mlproject.research.sweep import aggregate_sweep, plan_sweep

    if args.aggregate and args.plan_only:
        raise MlprojectError("--plan-only and --aggregate are two stages of a sweep; give one of them")
    if args.aggregate:
        aggregate_sweep(args.aggregate, plots=True)
        return True
    if args.plan_only:
        if args.command == "compare":
            from mlproject.research.compare import CompareJob as Job
        else:
            from mlproject.research.ablation import AblationJob as Job
        plan_sweep(Job.load(args.config, args).spec())
        return True
    return False


def _evaluate(args: argparse.Namespace) -> None:
    from mlproject.config import build_sections
    from mlproject.inference.eval_config import EvaluateConfig
    from mlproject.app.evaluate import run_evaluate
    from mlproject.tracking.model_store import MlflowModelStore

    run_evaluate(build_sections({"evaluate": EvaluateConfig}, yaml_path=args.config, args=args)["evaluate"],
                 MlflowModelStore())


def _export_hf(args: argparse.Namespace) -> None:
    from mlproject.config import from_dict, section_overrides
    from mlproject.inference.eval_config import ExportConfig
    from mlproject.app.evaluate import run_export_hf
    from mlproject.tracking.model_store import MlflowModelStore

    run_export_hf(from_dict(ExportConfig, section_overrides(args, ExportConfig), source="flags"), MlflowModelStore())


def _compare(args: argparse.Namespace) -> None:
    from mlproject.research.compare import CompareJob, run_compare

    if not _sweep_stage(args):
        run_compare(CompareJob.load(args.config, args))


def _ablate(args: argparse.Namespace) -> None:
    from mlproject.research.ablation import AblationJob, run_ablation

    if not _sweep_stage(args):
        run_ablation(AblationJob.load(args.config, args))


def _stage_flags(parser: argparse.ArgumentParser) -> None:
    """The plan and aggregate stages of a sweep (the child stage is `train --run-id`)."""
    group = parser.add_argument_group("sweep stages (for a scheduler that trains the children itself)")
    group.add_argument("--plan-only", "--plan_only", nargs="?", const=True, default=False, type=_switch,
                       metavar="BOOL", help="create the parent and SCHEDULED children, print their run ids, "
                                            "train nothing")
    group.add_argument("--aggregate", metavar="PARENT_RUN_ID", default=None,
                       help="statistics, results and plots of a planned parent from its children's runs")


def _tune(args: argparse.Namespace) -> None:
    from mlproject.research.tune import TuneJob, run_tune

    run_tune(TuneJob.load(args.config, args))


def _plot(args: argparse.Namespace) -> None:
    from mlproject.config import build_sections
    from mlproject.research.config import PlotConfig
    from mlproject.research.plots import run_plot

    run_plot(build_sections({"plot": PlotConfig}, yaml_path=args.config, args=args)["plot"])


def _pipeline(args: argparse.Namespace) -> int:
    from mlproject.orchestration.config import PipelineOptions
    from mlproject.orchestration.runner import run_pipeline

    options = PipelineOptions(config=args.config, step=args.step or [], dry_run=args.dry_run,
                              continue_on_error=args.continue_on_error, resume=args.resume)
    return run_pipeline(options)


def _server(args: argparse.Namespace) -> int:
    from mlproject.config import from_dict, section_overrides
    from mlproject.app.config import ServerConfig
    from mlproject.app.server import run_server

    return run_server(from_dict(ServerConfig, section_overrides(args, ServerConfig), source="flags"))


def _tracking_failure(exc: BaseException) -> str | None:
    """One line for an error caused by the tracking server not answering (None for others)."""
    if "mlflow" not in sys.modules:  # no tracking was involved
        return None
    from mlproject.tracking.store import connection_failure

    return connection_failure(exc)


# ----------------------------------------------------------------------------- parser

def _switch(text: str) -> bool:
    from mlproject.config import coerce

    return coerce(text, bool, key="flag", source="flags")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlproject", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        # argparse reads `-1e-3` as a flag (its number pattern has no exponent): `--lr -1e-3`
        # would fail with "expected one argument" instead of the config's own message.
        p._negative_number_matcher = _NEGATIVE_NUMBER
        return p

    p = command("datasets", _datasets, "list the dataset registry and which token caches exist")
    p.add_argument("--cache-dir", "--cache_dir", default=None, help="cache root to inspect")

    p = command("dataloaders", _dataloaders, "build a dataset's token cache and preview batches")
    from mlproject.data.config import DataConfig

    add_arguments(p, DataConfig, title="data")
    p.add_argument("--block-size", "--block_size", type=int, default=128)
    p.add_argument("--batch-size", "--batch_size", type=int, default=4)
    p.add_argument("--preview-batches", "--preview_batches", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)

    p = command("summary", _summary, "build model presets, print parameters and FLOPs, run a step")
    p.add_argument("--presets", nargs="+", default=["nano", "small", "base", "gpt2-124m", "gpt2-350m"])
    p.add_argument("--model-versions", "--model_versions", nargs="+", default=["gpt2", "gpt3"])
    p.add_argument("--block-size", "--block_size", type=int, default=256)

    p = command("import-hf", _import_hf, "convert a local Hugging Face GPT-2/Llama folder to a checkpoint")
    p.add_argument("--model-dir", "--model_dir", required=True, help="a save_pretrained folder")
    p.add_argument("--output", required=True, help="checkpoint file to write")

    p = command("train", _train, "train one model, tracked in MLflow")
    _run_sections(p)
    p.add_argument("--run-id", "--run_id", default=None, metavar="CHILD_RUN_ID",
                   help="train (or resume) a sweep child planned by `compare/ablate --plan-only`")

    from mlproject.inference.config import GenerateConfig

    p = command("generate", _generate, "generate text from a run, a models:/ URI or a checkpoint")
    p.add_argument("--config", help="YAML file with a `generate` section")
    add_arguments(p, GenerateConfig, title="generate")

    from mlproject.inference.eval_config import EvaluateConfig, ExportConfig

    p = command("evaluate", _evaluate, "evaluate a run, a models:/ URI or a checkpoint: loss, ppl, bpb, "
                "accuracy with confidence intervals; lm-eval tasks")
    p.add_argument("--config", help="YAML file with an `evaluate` section")
    add_arguments(p, EvaluateConfig, title="evaluate")

    p = command("export-hf", _export_hf, "export a run, a models:/ URI or a checkpoint to a Hugging Face folder")
    add_arguments(p, ExportConfig, title="export-hf")

    from mlproject.research.config import AblationConfig, CompareConfig, PlotConfig

    p = command("compare", _compare, "fair comparison of model versions across seeds (nested runs)")
    _run_sections(p)
    add_arguments(p, CompareConfig, title="compare")
    _stage_flags(p)

    p = command("ablate", _ablate, "ablation of one architecture axis across seeds (nested runs)")
    _run_sections(p)
    add_arguments(p, AblationConfig, title="ablation")
    _stage_flags(p)

    from mlproject.research.tune import TuneConfig

    p = command("tune", _tune, "hyperparameter search with Optuna; each trial a nested run")
    _run_sections(p)
    add_arguments(p, TuneConfig, title="tune")

    p = command("plot", _plot, "plot a compare/ablation from the tracking store")
    p.add_argument("--config", help="YAML file with a `plot` section")
    add_arguments(p, PlotConfig, title="plot")

    p = command("pipeline", _pipeline, "run the steps of a pipeline YAML in dependency order")
    p.add_argument("--config", required=True, help="pipeline YAML (configs/pipeline/)")
    p.add_argument("--step", action="append", help="run only this step id (repeatable; or space-separated ids)")
    # `--flag` or `--flag true|false`: `mlflow run -P resume=true` passes `--resume true`.
    switch = {"nargs": "?", "const": True, "default": False, "type": _switch, "metavar": "BOOL"}
    p.add_argument("--dry-run", "--dry_run", help="print the commands only", **switch)
    p.add_argument("--continue-on-error", "--continue_on_error", help="run independent steps after a failure",
                   **switch)
    p.add_argument("--resume", help="skip steps that finished in the last report", **switch)

    from mlproject.app.config import ServerConfig

    p = command("server", _server, "start an MLflow tracking server (127.0.0.1 by default)")
    add_arguments(p, ServerConfig, title="server")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mlproject.secrets import quiet_mlflow_run_links

    quiet_mlflow_run_links()
    try:
        result = args.handler(args)
    except MlprojectError as exc:
        print(f"mlproject: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        line = _tracking_failure(exc)
        if line is None:
            raise
        print(f"mlproject: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mlproject: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
