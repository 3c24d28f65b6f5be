"""The CLI's command table: every flag comes from a config field, and every spelling in use parses."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlproject.cli import COMMANDS, build_parser, main
from mlproject.config import section_overrides
from mlproject.data.config import PreviewConfig
from mlproject.orchestration.config import PipelineOptions

REPO = Path(__file__).resolve().parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_the_parser_has_exactly_the_commands_of_the_table():
    assert set(_subparsers(build_parser())) == set(COMMANDS)


def test_every_flag_but_help_and_config_is_a_field_of_one_of_the_commands_sections():
    for name, sub in _subparsers(build_parser()).items():
        sections = {cls.__name__ for cls in COMMANDS[name].sections.values()}
        for action in sub._actions:
            if action.dest in ("help", "config"):
                continue
            assert action.dest.split(".")[0] in sections, f"{name}: {action.option_strings} is no config field"


def test_building_the_parser_imports_neither_torch_nor_mlflow_nor_scipy():
    code = ("import sys; from mlproject.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'mlflow', 'scipy', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_preview_flags_default_to_the_preview_config_not_to_the_model_or_trainer():
    args = build_parser().parse_args(["dataloaders", "--block_size", "32"])
    assert section_overrides(args, PreviewConfig) == {"block_size": "32"}  # only what was passed
    assert PreviewConfig().block_size == 128 and PreviewConfig().seed == 42


def test_pipeline_step_flag_adds_up_over_repeats_and_splits_a_space_separated_value():
    args = build_parser().parse_args(["pipeline", "--config", "p.yaml", "--step", "compare", "--step", "plot"])
    assert section_overrides(args, PipelineOptions)["step"] == ["compare", "plot"]
    args = build_parser().parse_args(["pipeline", "--config", "p.yaml", "--step", "compare plot", "--dry_run",
                                      "true"])
    assert section_overrides(args, PipelineOptions) == {"config": "p.yaml", "step": "compare plot", "dry_run": "true"}


def test_pipeline_without_config_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["pipeline", "--dry-run"])
    assert exc.value.code == 2 and "--config" in capsys.readouterr().err


def test_a_bad_switch_value_is_a_one_line_error_naming_it(capsys):
    assert main(["pipeline", "--config", "p.yaml", "--dry-run", "maybe"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dry_run='maybe'" in err and "expected bool" in err


def test_plan_only_and_aggregate_together_are_refused_in_one_line(capsys):
    assert main(["compare", "--plan-only", "--aggregate", "abc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--plan-only and --aggregate" in err


def test_import_hf_needs_both_of_its_paths(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["import-hf", "--model-dir", "d"])
    assert exc.value.code == 2 and "--output" in capsys.readouterr().err


def test_every_mlproject_entry_point_command_parses_with_underscored_extras():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    extras = {"train": "--max_steps 30 --model_version gpt2 --resume_from abc --child_run_id r1",
              "compare": '--models "gpt2 gpt3" --seeds "42 43" --fair_recipe false --metric val_ppl_best '
                         "--parallel 2 --resume true --register_best NAME",
              "ablation": '--ablation_axis dropout --ablation_values "0 0.1" --plan_only true',
              "ladder": '--models "gpt2 gpt3" --rungs "2x2x32 2x4x64" --tokens_per_param 20 --holdout 1 '
                        '--seeds "42 43" --parallel 2 --iso_flop "1e12 3e12" --plan_only true',
              "tune": "--n_trials 12 --timeout 3600 --study_name lr --then_compare true",
              "plot": "--parent_run_id abc --kind compare --output_dir outputs/plots",
              "generate": '--run_id abc --prompts "Once upon" --temperature 0.8 --top_k 50',
              "evaluate": '--run_id abc --datasets "pydocs" --new_run true --tasks "hellaswag"',
              "reproduce": "--source record --allow_data_change true --num_threads 2 --max_steps 100",
              "pipeline": "--dry_run true --continue_on_error true --resume true --step compare"}
    parser = build_parser()
    for name, entry in project["entry_points"].items():
        # a parameter without a default is one `mlflow run` requires (-P run_id=...): a sample value
        defaults = {k: v.get("default", "abc") for k, v in entry.get("parameters", {}).items()}
        command = entry["command"].format(**defaults)
        argv = shlex.split(command)[1:] + shlex.split(extras[name])
        parser.parse_args(argv)  # a usage error raises SystemExit


def test_the_program_freezes_its_objects_on_the_way_out_and_an_in_process_call_does_not(monkeypatch, capsys):
    import gc

    before = gc.get_freeze_count()
    try:
        assert main(["datasets"]) == 0  # called with arguments (tests, the sweep's in-process children)
        assert gc.get_freeze_count() == before
        monkeypatch.setattr(sys, "argv", ["mlproject", "datasets"])
        assert main() == 0  # the program: it ends next, so the collector's last passes are skipped
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
    assert "pydocs" in capsys.readouterr().out


@pytest.mark.parametrize("spelling", ["--run-id", "--run_id"])
def test_run_id_in_train_is_refused_in_one_line_naming_child_run_id(capsys, spelling):
    # In generate/evaluate --run-id is the source run; train's planned child has its own flag.
    assert main(["train", spelling, "0123456789abcdef0123456789abcdef"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--child-run-id 0123456789abcdef0123456789abcdef" in err
    assert "generate/evaluate" in err


@pytest.mark.parametrize("spelling", ["--child-run-id", "--child_run_id"])
def test_train_names_its_planned_child_child_run_id_in_both_spellings(spelling):
    args = build_parser().parse_args(["train", spelling, "abc"])
    assert section_overrides(args, COMMANDS["train"].sections["sweep child"]) == {"child_run_id": "abc"}


def test_train_help_shows_child_run_id_and_not_run_id():
    help_text = _subparsers(build_parser())["train"].format_help()
    assert "--child-run-id CHILD_RUN_ID" in help_text and "--run-id" not in help_text


def test_the_child_stage_command_is_train_child_run_id():
    from mlproject.research.sweep import child_command

    assert child_command("abc") == ["mlproject", "train", "--child-run-id", "abc"]
