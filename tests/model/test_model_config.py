"""GPTConfig validation: impossible architectures are one-line ConfigErrors naming the field."""

from __future__ import annotations

import pytest

from mlproject.config import from_dict
from mlproject.errors import ConfigError
from mlproject.model.config import GPTConfig

INVALID = [
    ({"preset": None, "n_layer": 2, "n_head": 3, "d_model": 32}, "d_model=32"),
    ({"preset": None, "n_layer": 2, "n_head": 4, "d_model": 12, "pos_encoding": "rope"}, "pos_encoding='rope'"),
    ({"norm_type": "batchnorm"}, "norm_type"),
    ({"gelu_approximate": "sigmoid"}, "gelu_approximate"),
    ({"preset": "huge"}, "preset='huge'"),
    ({"attention_window": 0}, "attention_window=0"),
    ({"resid_dropout": 1.0}, "resid_dropout=1.0"),
]


@pytest.mark.parametrize(("values", "names"), INVALID)
def test_invalid_config_from_dict_is_a_one_line_error_naming_the_field(values, names):
    with pytest.raises(ConfigError, match=names) as info:
        from_dict(GPTConfig, values, source="model").resolved()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("values", "names"), INVALID)
def test_invalid_config_built_in_code_fails_in_resolved(values, names):
    with pytest.raises(ConfigError, match=names) as info:
        GPTConfig(**values).resolved()
    assert "\n" not in str(info.value)


def test_preset_sizes_are_overridable_and_checked_together():
    with pytest.raises(ConfigError, match="not divisible by n_head=12"):
        GPTConfig(preset="base", d_model=100).resolved()


def test_resolved_is_idempotent():
    cfg = GPTConfig(model_version="gpt3", preset="small").resolved()
    assert cfg.resolved() == cfg
