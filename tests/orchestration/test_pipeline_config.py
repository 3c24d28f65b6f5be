"""A pipeline YAML and the options of `mlproject pipeline`: one-line errors naming the file or
the value, and the option names of the command's flags."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlproject.config import from_dict
from mlproject.errors import ConfigError
from mlproject.orchestration.config import PipelineOptions
from mlproject.orchestration.graph import load_pipeline


def write_pipeline(path: Path, steps: list[dict], name: str = "testpipe") -> Path:
    path.write_text(yaml.safe_dump({"pipeline": {"name": name, "experiment_name": f"exp-{name}"}, "steps": steps},
                                   sort_keys=False))
    return path


@pytest.mark.parametrize("steps, message", [
    ([{"id": "a", "entry_point": "plot", "needs": ["b"]}, {"id": "b", "entry_point": "plot", "needs": ["a"]}],
     "cycle"),
    ([{"id": "a", "entry_point": "plot", "needs": ["zzz"]}], "unknown step 'zzz'"),
    ([{"id": "a", "entry_point": "plot"},
      {"id": "b", "entry_point": "plot", "parameters": {"x": "{{ steps.a.run_id }}"}}], "add a to its needs"),
    ([{"id": "a", "entry_point": "bogus"}], "entry_point='bogus'"),
    ([{"id": "a", "entry_point": "plot", "colour": "red"}], "unknown key 'colour'"),
])
def test_invalid_pipeline_is_a_one_line_config_error_naming_the_file(tmp_path, steps, message):
    path = write_pipeline(tmp_path / "bad.yaml", steps)
    with pytest.raises(ConfigError, match=message) as info:
        load_pipeline(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_pipeline_options_take_the_flag_names_and_split_step_ids():
    options = from_dict(PipelineOptions, {"config": "p.yaml", "step": "compare,plot", "dry-run": "true",
                                          "continue_on_error": "false", "resume": True}, source="flags")
    assert (options.config, options.dry_run, options.continue_on_error, options.resume) == \
           ("p.yaml", True, False, True)
    assert options.selected_steps() == {"compare", "plot"}
    assert PipelineOptions(config="p.yaml", step=["a b", "c"]).selected_steps() == {"a", "b", "c"}


@pytest.mark.parametrize("data, message", [
    ({}, "config"),
    ({"config": " "}, "config=''"),
    ({"config": "p.yaml", "steps": ["a"]}, "unknown key 'steps'"),
    ({"config": "p.yaml", "resume": "maybe"}, "resume='maybe'"),
])
def test_bad_pipeline_options_are_one_line_config_errors(data, message):
    with pytest.raises(ConfigError, match=message) as info:
        from_dict(PipelineOptions, data, source="flags")
    assert "\n" not in str(info.value)
