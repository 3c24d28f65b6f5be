"""The typed config layer: YAML, flags and `mlflow run -P` values all validate the same way."""

from __future__ import annotations

import pytest

from mlproject.cli import build_parser, main
from mlproject.config import build_sections, coerce, flatten, from_dict, load_yaml
from mlproject.errors import ConfigError
from mlproject.model.config import GPTConfig
from mlproject.research.config import CompareConfig
from mlproject.app.config import RunConfig
from mlproject.training.config import TrainConfig


def test_unknown_key_names_the_key_and_the_allowed_ones():
    with pytest.raises(ConfigError) as exc:
        from_dict(TrainConfig, {"max_step": 10})
    message = str(exc.value)
    assert "'max_step'" in message and "max_steps" in message
    assert "\n" not in message


def test_wrongly_typed_value_names_key_value_and_expected_type():
    with pytest.raises(ConfigError, match=r"batch_size='eight'.*expected int"):
        from_dict(TrainConfig, {"batch_size": "eight"})


def test_choices_are_enforced_with_the_allowed_values():
    with pytest.raises(ConfigError, match=r"norm_type='batchnorm'.*layernorm\|rmsnorm"):
        from_dict(GPTConfig, {"norm_type": "batchnorm"})


def test_string_values_from_mlflow_parameters_are_coerced():
    cfg = from_dict(TrainConfig, {"max_steps": "30", "learning_rate": "1e-3", "amp": "false",
                                  "weight_decay": "None"})
    assert cfg.max_steps == 30 and cfg.learning_rate == pytest.approx(1e-3)
    assert cfg.amp is False and cfg.weight_decay is None


def test_integral_float_strings_become_ints_but_fractions_do_not():
    assert coerce("100.0", int, key="k") == 100
    with pytest.raises(ConfigError):
        coerce("2.5", int, key="k")


def test_space_separated_list_strings_are_split():
    cfg = from_dict(CompareConfig, {"models": "gpt2 gpt3", "seeds": "42,43"})
    assert cfg.models == ["gpt2", "gpt3"] and cfg.seeds == [42, 43]


def test_dashes_and_aliases_map_to_fields():
    cfg = from_dict(TrainConfig, {"max-steps": 5, "val-checking": 7, "lr": 0.01})
    assert (cfg.max_steps, cfg.eval_interval, cfg.learning_rate) == (5, 7, 0.01)


def test_flags_override_yaml_and_both_spellings_work(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {n_layer: 3, norm_type: rmsnorm}\ntrain: {max_steps: 100}\n")
    args = build_parser().parse_args(["train", "--config", str(path), "--max_steps", "7", "--n-head", "2"])
    cfg = RunConfig.load(args.config, args)
    assert cfg.train.max_steps == 7            # flag wins
    assert cfg.model.n_layer == 3 and cfg.model.norm_type == "rmsnorm"  # from the file
    assert cfg.model.n_head == 2


def test_yaml_error_names_file_section_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {batch_size: [1, 2]}\n")
    with pytest.raises(ConfigError) as exc:
        build_sections(RunConfig.SECTIONS, yaml_path=path)
    assert str(path) in str(exc.value) and "batch_size" in str(exc.value)


def test_unknown_yaml_section_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optimizer: {lr: 1}\n")
    with pytest.raises(ConfigError, match="unknown section 'optimizer'"):
        build_sections(RunConfig.SECTIONS, yaml_path=path)


def test_missing_and_malformed_yaml_files_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("model: {n_layer: 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml(bad)


def test_preset_resolution_and_explicit_size_override():
    cfg = GPTConfig(model_version="gpt3", preset="small", d_model=384).resolved()
    assert (cfg.n_layer, cfg.n_head, cfg.d_model) == (8, 8, 384)
    assert cfg.block_size == 2048 and cfg.attention_pattern == "alternating"
    assert GPTConfig().resolved().attention_pattern == "dense"


def test_flatten_prefixes_nested_fields():
    flat = flatten({"model": GPTConfig(n_layer=2), "train": TrainConfig(max_steps=3)})
    assert flat["model.n_layer"] == 2 and flat["train.max_steps"] == 3


def test_cli_reports_bad_input_in_one_line_without_traceback(capsys):
    assert main(["train", "--n-head", "3", "--d-model", "64", "--n-layer", "1", "--preset", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlproject: error:") and "d_model=64" in err and "n_head=3" in err
    assert len(err.splitlines()) == 1


def test_free_text_list_fields_keep_a_single_string_whole():
    from mlproject.inference.config import GenerateConfig

    args = build_parser().parse_args(["generate", "--prompt", "Once upon a time"])
    cfg = build_sections({"generate": GenerateConfig}, args=args)["generate"]
    assert cfg.prompts == ["Once upon a time"]
    args = build_parser().parse_args(["generate", "--prompts", "Once upon", "The cat"])
    cfg = build_sections({"generate": GenerateConfig}, args=args)["generate"]
    assert cfg.prompts == ["Once upon", "The cat"]
