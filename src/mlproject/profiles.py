"""Profiles: the defaults a command starts from. `default` is this suite's; `original` is the
original suite's (pablo-reyes8/implementing-gpt, its `scripts/*.py` argparse defaults), so the
same command line trains the same experiment it trained there.

`ORIGINAL` below is the one place those defaults are written. A profile's values sit under a
YAML file and the flags (both still win), and `docs/migration.md` holds the table rendered from
here (`defaults_table`; a test checks the page against it). `--profile original` on a command,
or `MLPROJECT_PROFILE=original` in its environment, selects it; an explicit flag wins over the
variable. Plain commands keep this suite's defaults.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mlproject.config import section_overrides
from mlproject.errors import ConfigError

PROFILES = ("default", "original")
PROFILE_ENV = "MLPROJECT_PROFILE"
_SWEEPS = ("compare", "ablate")
_RUNS = ("train", *_SWEEPS)


@dataclass
class ProfileOption:
    """`--profile`: the defaults a command starts from. A flag section of the commands the original
    scripts map to (train, compare, ablate, plot, generate) and of pipeline, whose steps they are."""

    profile: Literal["default", "original"] | None = dataclasses.field(default=None, metadata={
        "help": f"this suite's defaults, or the original suite's (docs/migration.md); default: ${PROFILE_ENV}, "
                "else default"})


@dataclass(frozen=True)
class Default:
    """One default of the original suite: for `commands`, field `name` of config section `section`."""

    commands: tuple[str, ...]
    section: str
    name: str
    value: Any
    why: str = ""


ORIGINAL: tuple[Default, ...] = (
    Default(_RUNS, "tracking", "profile", "original", "recorded as the run's mlproject.profile tag"),
    Default(_RUNS, "data", "dataset", "small", "its --dataset default"),
    Default(_RUNS, "model", "block_size", 256, "this suite: 1024 (gpt2) / 2048 (gpt3), as the papers"),
    # train's 4 layers, 4 heads, width 256 are this suite's `nano` preset, the default of both
    Default(_SWEEPS, "model", "preset", "small", "its 8 layers, 8 heads, width 512"),
    Default(("ablate",), "model", "model_version", "gpt3", "run_ablations.py ablates GPT-3"),
    Default(_RUNS, "model", "dropout", 0.1, "this suite: 0 (no dropout, as for large-data pretraining)"),
    Default(_RUNS, "model", "attention_impl", "manual", "its explicit softmax attention"),
    Default(_RUNS, "model", "gelu_approximate", "none", "its nn.GELU() is the exact erf GELU"),
    Default(_RUNS, "train", "batch_size", 32),
    Default(_RUNS, "train", "learning_rate", 3e-4, "its --base-lr"),
    Default(_RUNS, "train", "min_lr_ratio", 0.0, "its cosine decays to 0"),
    Default(("train",), "train", "epochs", 10),
    Default(_SWEEPS, "train", "epochs", 3),
    Default(_RUNS, "train", "log_interval", 100, "its --log-every"),
    Default(_RUNS, "train", "precision", "fp32", "no --amp: fp32 (this suite: bf16 where the device has it)"),
    Default(("train",), "runtime", "compile_mode", "max-autotune", "with --compile"),
    Default(_SWEEPS, "runtime", "compile_mode", "default", "with --compile"),
    Default(("train",), "tracking", "output_dir", "checkpoints",
            "where its files go (run config, history, checkpoints)"),
    Default(_RUNS, "tracking", "local_copies", True, "checkpoints/<run>.* and research_runs/<kind>/<experiment>/, "
                                                     "as it wrote them"),
    Default(("compare",), "compare", "seeds", [42]),
    Default(("compare",), "compare", "fair_recipe", False, "it trained each version with its own recipe"),
    Default(("ablate",), "ablation", "seeds", [42]),
    Default(("generate",), "generate", "prompts", ["Hola"], "its --prompt"),
    Default(("generate",), "generate", "max_new_tokens", 50),
    Default(("generate",), "generate", "top_k", 50),
    Default(("generate",), "generate", "strategy", "topk"),
    Default(("plot",), "plot", "output_dir", "research_runs/plots"),
    Default(("plot",), "plot", "profile", "original", "writes its summary CSV (summary_KIND_METRIC.csv)"),
)


def active_profile(flag: str | None) -> str:
    """The profile of a command: its `--profile` flag, else $MLPROJECT_PROFILE, else `default`."""
    if flag is not None:
        value, source = flag, "--profile"
    else:
        value, source = os.environ.get(PROFILE_ENV, "").strip() or "default", PROFILE_ENV
    if value not in PROFILES:
        raise ConfigError(f"{source}={value!r} is not a profile; expected one of: {', '.join(PROFILES)}")
    return value


def profile_defaults(command: str | None, profile: str) -> dict[str, dict[str, Any]]:
    """{section: {field: value}} of `profile` for `command` (empty for the default profile)."""
    if profile != "original":
        return {}
    out: dict[str, dict[str, Any]] = {}
    for d in ORIGINAL:
        if command in d.commands:
            out.setdefault(d.section, {})[d.name] = d.value
    return out


def command_defaults(args: Any) -> dict[str, dict[str, Any]]:
    """The profile defaults of the command `args` were parsed for (its `--profile`, else the environment)."""
    if args is None:
        return {}
    return profile_defaults(getattr(args, "command", None),
                            active_profile(section_overrides(args, ProfileOption).get("profile")))


def _cell(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def defaults_table(sections_of: Mapping[str, Mapping[str, type]]) -> str:
    """The Markdown table of `ORIGINAL` beside this suite's defaults (`sections_of`: each command's
    {section: dataclass}, the CLI's command table), as docs/migration.md holds it."""
    lines = ["| command(s) | field | original | this suite | note |", "|---|---|---|---|---|"]
    for d in ORIGINAL:
        cls = sections_of[d.commands[0]][d.section]
        f = next(f for f in dataclasses.fields(cls) if f.name == d.name)
        ours = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        lines.append(f"| {', '.join(d.commands)} | `{d.section}.{d.name}` | {_cell(d.value)} | {_cell(ours)} "
                     f"| {d.why} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the original's flags

@dataclass(frozen=True)
class Flag:
    """A flag of the original scripts and the config field it sets here (`section.field`), or how it is
    read when no field holds it (`field` empty, `note` says)."""

    flag: str
    scripts: str
    field: str
    note: str = ""


_T, _G, _C, _A, _P = "train", "generate", "compare_models", "run_ablations", "plot_results"
_TCA = f"{_T}, {_C}, {_A}"
_ALL = f"{_T}, {_G}, {_C}, {_A}"

ORIGINAL_FLAGS: tuple[Flag, ...] = (
    Flag("--dataset", _TCA, "data.dataset"),
    Flag("--block-size", _ALL, "model.block_size", "generate: checked against the checkpoint"),
    Flag("--batch-size", _TCA, "train.batch_size"),
    Flag("--num-workers", _TCA, "runtime.num_workers", "its DataLoader workers; here the tokenizer's threads "
         "(batches are read from a memory-mapped cache, no workers)"),
    Flag("--model-version", f"{_T}, {_G}, {_A}", "model.model_version", "generate: checked against the checkpoint"),
    Flag("--model-preset", _T, "model.preset"),
    Flag("--models", _C, "compare.models"),
    Flag("--seeds", f"{_C}, {_A}", "compare.seeds / ablation.seeds"),
    Flag("--n-layer", _ALL, "model.n_layer", "generate: checked against the checkpoint"),
    Flag("--n-head", _ALL, "model.n_head", "generate: checked against the checkpoint"),
    Flag("--d-model", _ALL, "model.d_model", "generate: checked against the checkpoint"),
    Flag("--dropout", _ALL, "model.dropout", "generate: accepted, no effect (no dropout when generating)"),
    Flag("--layernorm-eps", _ALL, "model.norm_eps", "generate: checked against the checkpoint"),
    Flag("--mlp-expansion", _ALL, "model.mlp_expansion", "generate: checked against the checkpoint"),
    Flag("--resid-dropout", _ALL, "model.resid_dropout", "GPT-3's residual dropout; an ablation axis; generate: "
         "accepted, no effect"),
    Flag("--norm-type", _ALL, "model.norm_type", "generate: checked against the checkpoint"),
    Flag("--mlp-type", _ALL, "model.mlp_type", "generate: checked against the checkpoint"),
    Flag("--pos-encoding", _ALL, "model.pos_encoding", "generate: checked against the checkpoint"),
    Flag("--attention-impl", _ALL, "model.attention_impl", "generate: checked against the checkpoint"),
    Flag("--rope-base", _ALL, "model.rope_theta", "generate: checked against the checkpoint"),
    Flag("--gradient-checkpointing", _TCA, "model.gradient_checkpointing"),
    Flag("--ablation-axis", _A, "ablation.ablation_axis", "resid_dropout is an axis too"),
    Flag("--ablation-values", _A, "ablation.ablation_values"),
    Flag("--epochs", _TCA, "train.epochs"),
    Flag("--max-steps", _TCA, "train.max_steps"),
    Flag("--base-lr", _TCA, "train.learning_rate"),
    Flag("--label-smoothing", _TCA, "train.label_smoothing"),
    Flag("--warmup-steps", _TCA, "train.warmup_steps", "a step count (--warmup-fraction for a share of the run)"),
    Flag("--weight-decay", _TCA, "train.weight_decay"),
    Flag("--grad-clip", _TCA, "train.grad_clip"),
    Flag("--beta1", _TCA, "train.beta1"),
    Flag("--beta2", _TCA, "train.beta2"),
    Flag("--scheduler-type", _TCA, "train.scheduler", "cosine | warmup_cosine | none | constant"),
    Flag("--log-every", _TCA, "train.log_interval"),
    Flag("--preview-every", _T, "runtime.preview_every", "prints a decoded sample, logged under previews/"),
    Flag("--val-checking", _TCA, "train.eval_interval", "bare: evaluate every eval_interval steps (default 100)"),
    Flag("--save-ckpt-every", _TCA, "runtime.save_every_epochs", "in epochs"),
    Flag("--seed", _T, "train.seed"),
    Flag("--amp", _TCA, "train.amp", "sets train.precision to --amp-dtype; without it the profile's fp32"),
    Flag("--amp-dtype", _TCA, "train.amp_dtype"),
    Flag("--device", f"{_ALL}", "runtime.device / generate.device"),
    Flag("--compile", _TCA, "runtime.compile"),
    Flag("--compile-mode", _TCA, "runtime.compile_mode", "passed to torch.compile"),
    Flag("--output-dir", f"{_TCA}, {_P}", "tracking.output_dir / plot.output_dir",
         "compare/ablate: the children's checkpoint folder; the results copy is always under "
         "research_runs/KIND/EXPERIMENT"),
    Flag("--run-name", _T, "tracking.run_name"),
    Flag("--experiment-name", f"{_C}, {_A}", "tracking.experiment_name"),
    Flag("--ckpt-name", _T, "tracking.ckpt_name",
         "OUTPUT_DIR/CKPT_NAME; the last checkpoint beside it as STEM.last.pt"),
    Flag("--history-path", _T, "tracking.history_path"),
    Flag("--config-path", _T, "tracking.config_path"),
    Flag("--checkpoint", _G, "generate.checkpoint"),
    Flag("--tokenizer-path", _G, "generate.tokenizer_path"),
    Flag("--use-ckpt-config", _G, "generate.use_ckpt_config", "always: the model comes from the checkpoint"),
    Flag("--prompt", _G, "generate.prompts"),
    Flag("--max-new-tokens", _G, "generate.max_new_tokens"),
    Flag("--temperature", _G, "generate.temperature"),
    Flag("--top-k", _G, "generate.top_k"),
    Flag("--strategy", _G, "generate.strategy"),
    Flag("--results", _P, "plot.results", "several files pooled; the original's or this suite's columns"),
    Flag("--kind", _P, "plot.kind"),
    Flag("--metric", _P, "plot.metric"),
    Flag("--plot-name", _P, "plot.plot_name"),
    Flag("--title", _P, "plot.title"),
    Flag("--summary-csv", _P, "plot.summary_csv", "columns: group, n, mean, std, min, max"),
)


def flags_table() -> str:
    """The Markdown table of `ORIGINAL_FLAGS`, as docs/migration.md holds it."""
    lines = ["| original flag | scripts | here | note |", "|---|---|---|---|"]
    lines += [f"| `{f.flag}` | {f.scripts} | `{f.field}` | {f.note} |" for f in ORIGINAL_FLAGS]
    return "\n".join(lines) + "\n"
