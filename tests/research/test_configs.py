"""The shipped YAML configs and the MLproject file: everything loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlproject.config import build_sections
from mlproject.errors import ConfigError
from mlproject.research.ablation import AblationJob
from mlproject.research.compare import CompareJob
from mlproject.research.ladder import LadderJob
from mlproject.research.config import PlotConfig
from mlproject.orchestration.graph import load_pipeline
from mlproject.research.tune import TuneJob
from mlproject.app.config import RunConfig
from helpers import REPO

CONFIGS = REPO / "configs"
ORIGINAL = ["train/gpt3_research_small.yaml", "compare/gpt2_vs_gpt3_small_fair.yaml",
            "ablation/norm_ablation_gpt3_small.yaml", "plot/compare_plot.yaml", "plot/ablation_plot.yaml",
            "pipeline/research_small_repro.yaml"]
LOADERS = {
    "train": RunConfig.load,
    "compare": CompareJob.load,
    "ablation": AblationJob.load,
    "plot": lambda path: build_sections({"plot": PlotConfig}, yaml_path=path)["plot"],
    "pipeline": load_pipeline,
    "tune": TuneJob.load,
    "ladder": LadderJob.load,
}


def all_configs() -> list[Path]:
    return sorted(CONFIGS.glob("*/*.yaml"))


@pytest.mark.parametrize("name", ORIGINAL)
def test_each_original_config_has_an_offline_variant_on_pydocs(name):
    offline = CONFIGS / name.replace(".yaml", "_offline.yaml")
    assert (CONFIGS / name).is_file() and offline.is_file()
    data = yaml.safe_load(offline.read_text())
    if "data" in data:
        assert data["data"]["dataset"] == "pydocs"


@pytest.mark.parametrize("path", all_configs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_loads_and_validates(path):
    LOADERS[path.parent.name](path)


def test_offline_pipeline_steps_point_at_offline_configs():
    pipeline = load_pipeline(CONFIGS / "pipeline/research_small_repro_offline.yaml")
    for step in pipeline.steps:
        config = step.parameters["config"]
        assert (REPO / config).is_file() and config.endswith("_offline.yaml")


def test_the_main_job_reports_val_bpb_best_in_its_summary_table_and_plot():
    compare = yaml.safe_load((CONFIGS / "compare/gpt2_vs_gpt3_small_fair_offline.yaml").read_text())["compare"]
    plot = yaml.safe_load((CONFIGS / "plot/compare_plot_offline.yaml").read_text())["plot"]
    assert "val_bpb_best" in compare["metrics"] and plot["metric"] == "val_bpb_best"


def test_mlproject_entry_points_default_to_offline_configs():
    entry_points = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    assert set(entry_points) == {"train", "compare", "ablation", "plot", "generate", "evaluate", "pipeline",
                                 "tune", "reproduce", "ladder"}
    for name, entry in entry_points.items():
        config = entry["parameters"].get("config")
        if config is not None:
            assert config["default"].endswith("_offline.yaml") and (REPO / config["default"]).is_file(), name


def test_a_wrongly_typed_value_names_file_key_and_expected_type(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  n_layer: four\n")
    with pytest.raises(ConfigError) as info:
        RunConfig.load(path)
    assert str(info.value) == f"{path}: model: n_layer='four' is not a valid value; expected int (or null)"


def test_an_unknown_key_names_file_key_and_allowed_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("compare:\n  modles: [gpt2]\n")
    with pytest.raises(ConfigError, match=rf"{path}: compare: unknown key 'modles'; allowed keys: .*models"):
        CompareJob.load(path)


def test_the_tune_search_ships_offline_for_2_cores_beside_a_hub_variant():
    offline = TuneJob.load(CONFIGS / "tune/lr_search_offline.yaml")
    hub = TuneJob.load(CONFIGS / "tune/lr_search.yaml")
    assert offline.run.data.dataset == "pydocs" and hub.run.data.dataset != "pydocs"
    assert [d.name for d in offline.space] == ["train.learning_rate", "train.warmup"]
    assert offline.space[0].log and offline.tune.sampler == "tpe"
