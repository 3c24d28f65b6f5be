"""Every flag of the original suite's scripts is accepted by the subcommand its script maps to and
sets the field `mlproject.profiles.ORIGINAL_FLAGS` says (the table docs/migration.md shows), and
`--profile original` (or MLPROJECT_PROFILE) gives every default of `mlproject.profiles.ORIGINAL`.
What each one then does is tested beside its code (tests/training/test_original_train_flags.py,
tests/inference/test_generate_original_flags.py, tests/research/test_original_plot.py,
tests/tracking/test_original_profile.py)."""

from __future__ import annotations

import pytest

from mlproject.cli import COMMANDS, build_parser
from mlproject.config import build_sections
from mlproject.profiles import ORIGINAL, ORIGINAL_FLAGS

# The flags of the original scripts (pablo-reyes8/implementing-gpt, scripts/*.py argparse), by script.
_MODEL = ("--block-size --n-layer --n-head --d-model --dropout --layernorm-eps --mlp-expansion --resid-dropout "
          "--norm-type --mlp-type --pos-encoding --attention-impl --rope-base").split()
_TRAINING = ("--dataset --batch-size --num-workers --gradient-checkpointing --epochs --max-steps --base-lr "
             "--label-smoothing --warmup-steps --weight-decay --grad-clip --beta1 --beta2 --scheduler-type "
             "--log-every --val-checking --save-ckpt-every --amp --amp-dtype --device --compile --compile-mode "
             "--output-dir").split()
SCRIPTS = {
    "train": [*_MODEL, *_TRAINING, "--model-version", "--model-preset", "--preview-every", "--seed", "--run-name",
              "--ckpt-name", "--history-path", "--config-path"],
    "compare_models": [*_MODEL, *_TRAINING, "--models", "--seeds", "--experiment-name"],
    "run_ablations": [*_MODEL, *_TRAINING, "--model-version", "--seeds", "--experiment-name", "--ablation-axis",
                      "--ablation-values"],
    "generate": [*_MODEL, "--model-version", "--checkpoint", "--tokenizer-path", "--use-ckpt-config", "--prompt",
                 "--max-new-tokens", "--temperature", "--top-k", "--strategy", "--device"],
    "plot_results": ["--results", "--kind", "--metric", "--output-dir", "--plot-name", "--title", "--summary-csv"],
}
SUBCOMMAND = {"train": "train", "compare_models": "compare", "run_ablations": "ablate", "generate": "generate",
              "plot_results": "plot"}
# flag -> (argument words, the value its field then holds); () is a bare switch
EXAMPLES = {
    "--dataset": (["wikitext2"], "wikitext2"), "--block-size": (["64"], 64), "--batch-size": (["8"], 8),
    "--num-workers": (["3"], 3), "--model-version": (["gpt3"], "gpt3"), "--model-preset": (["small"], "small"),
    "--models": (["gpt3"], ["gpt3"]), "--seeds": (["7", "8"], [7, 8]), "--n-layer": (["3"], 3),
    "--n-head": (["2"], 2), "--d-model": (["96"], 96), "--dropout": (["0.2"], 0.2),
    "--layernorm-eps": (["1e-6"], 1e-6), "--mlp-expansion": (["2"], 2.0), "--resid-dropout": (["0.3"], 0.3),
    "--norm-type": (["rmsnorm"], "rmsnorm"), "--mlp-type": (["swiglu"], "swiglu"),
    "--pos-encoding": (["rope"], "rope"), "--attention-impl": (["manual"], "manual"),
    "--rope-base": (["500"], 500.0), "--gradient-checkpointing": ((), True),
    "--ablation-axis": (["resid_dropout"], "resid_dropout"), "--ablation-values": (["0.1", "0.2"], ["0.1", "0.2"]),
    "--epochs": (["2"], 2), "--max-steps": (["5"], 5), "--base-lr": (["1e-3"], 1e-3),
    "--label-smoothing": (["0.1"], 0.1), "--warmup-steps": (["7"], 7.0), "--weight-decay": (["0.05"], 0.05),
    "--grad-clip": (["0.5"], 0.5), "--beta1": (["0.8"], 0.8), "--beta2": (["0.9"], 0.9),
    "--scheduler-type": (["constant"], "constant"), "--log-every": (["7"], 7), "--preview-every": (["3"], 3),
    "--val-checking": ((), 100), "--save-ckpt-every": (["2"], 2), "--seed": (["7"], 7), "--amp": ((), True),
    "--amp-dtype": (["fp16"], "fp16"), "--device": (["cpu"], "cpu"), "--compile": ((), True),
    "--compile-mode": (["reduce-overhead"], "reduce-overhead"), "--output-dir": (["out"], "out"),
    "--run-name": (["r"], "r"), "--experiment-name": (["e"], "e"), "--ckpt-name": (["c.pt"], "c.pt"),
    "--history-path": (["h.pt"], "h.pt"), "--config-path": (["c.json"], "c.json"),
    "--checkpoint": (["x.pt"], "x.pt"), "--tokenizer-path": (["t.json"], "t.json"),
    "--use-ckpt-config": ((), True), "--prompt": (["Hi there"], ["Hi there"]), "--max-new-tokens": (["5"], 5),
    "--temperature": (["0.7"], 0.7), "--top-k": (["5"], 5), "--strategy": (["greedy"], "greedy"),
    "--results": (["a.jsonl", "b.jsonl"], ["a.jsonl", "b.jsonl"]), "--kind": (["ablation"], "ablation"),
    "--metric": (["train_loss_last"], "train_loss_last"), "--plot-name": (["p.png"], "p.png"),
    "--title": (["T"], "T"), "--summary-csv": (["s.csv"], "s.csv"),
}
CASES = [(script, flag) for script, flags in SCRIPTS.items() for flag in flags]


def _field(flag: str, command: str) -> tuple[str, str]:
    """(section, field) the table gives for `flag` under `command` (generate's model fields are its own)."""
    (row,) = [f for f in ORIGINAL_FLAGS if f.flag == flag]
    sections = COMMANDS[command].sections
    for option in row.field.split(" / "):
        section, name = option.split(".")
        if section in sections:
            return section, name
    (own,) = [s for s in sections if s == command]
    return own, row.field.split(".")[-1]


def test_the_table_lists_exactly_the_flags_of_every_original_script():
    for script, flags in SCRIPTS.items():
        listed = {f.flag for f in ORIGINAL_FLAGS if script in f.scripts.split(", ")}
        assert listed == set(flags), script


@pytest.mark.parametrize("script,flag", CASES, ids=[f"{s}{f}" for s, f in CASES])
def test_every_original_flag_sets_its_field(script, flag, monkeypatch):
    monkeypatch.delenv("MLPROJECT_PROFILE", raising=False)
    command = SUBCOMMAND[script]
    words, expected = EXAMPLES[flag]
    args = build_parser().parse_args([command, flag, *words])
    section, name = _field(flag, command)
    built = build_sections(COMMANDS[command].sections, args=args)
    assert getattr(built[section], name) == expected


PROFILE_CASES = [(command, d) for d in ORIGINAL for command in d.commands]


@pytest.mark.parametrize("command,default", PROFILE_CASES,
                         ids=[f"{c}-{d.section}.{d.name}" for c, d in PROFILE_CASES])
def test_the_original_profile_gives_every_default_of_its_table_and_plain_commands_keep_ours(command, default,
                                                                                            monkeypatch):
    from mlproject.profiles import command_defaults

    monkeypatch.delenv("MLPROJECT_PROFILE", raising=False)
    sections = COMMANDS[command].sections

    def built(*argv: str):
        args = build_parser().parse_args([command, *argv])
        return getattr(build_sections(sections, args=args, defaults=command_defaults(args))[default.section],
                       default.name)

    assert built("--profile", "original") == default.value
    assert built() != default.value  # the table lists differences only
    monkeypatch.setenv("MLPROJECT_PROFILE", "original")
    assert built() == default.value and built("--profile", "default") != default.value
