"""The runtime section (how a run goes) apart from the recipe (what it computes), the warmup as
steps or a fraction, and the files and flags of earlier releases that still load."""

from __future__ import annotations

import pytest
import yaml

from helpers import tiny
from mlproject.app.config import RunConfig
from mlproject.cli import build_parser
from mlproject.config import build_sections, from_dict
from mlproject.errors import ConfigError
from mlproject.training.config import RuntimeConfig, TrainConfig

RUNTIME = {"device": "cpu", "num_threads": 1, "progress": "lines", "compile_mode": "default", "peak_flops": 1e11,
           "preview_every": 5, "allow_nonfinite": True, "cache_dir": "/tmp/elsewhere", "num_workers": 2}


def _write(path, data) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


def _earlier_layout(data: dict) -> dict:
    """`data` as releases before the runtime section wrote it: cache_dir and num_workers under
    data:, the other runtime keys under train:."""
    out = {name: dict(values) for name, values in data.items() if name != "runtime"}
    for key, value in data.get("runtime", {}).items():
        out.setdefault("data" if key in ("cache_dir", "num_workers") else "train", {})[key] = value
    return out


def _flags(*argv: str) -> RunConfig:
    return RunConfig.load(None, build_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize("train", [{"warmup_steps": 30}, {"warmup_steps": None, "warmup_fraction": 0.2}, {"warmup_steps": None}])
def test_a_run_config_round_trips_through_its_sections(tmp_path, train):
    cfg = RunConfig.load(_write(tmp_path / "run.yaml", tiny(runtime=RUNTIME, train=train)))
    assert RunConfig(**build_sections(RunConfig.SECTIONS, data=cfg.sections())) == cfg


@pytest.mark.parametrize("train", [{"warmup_steps": 30}, {"warmup_steps": None, "warmup_fraction": 0.2}, {"warmup_steps": None}])
def test_the_layout_of_earlier_releases_reads_back_as_the_same_config(train):
    cfg = RunConfig(**build_sections(RunConfig.SECTIONS, data=tiny(runtime=RUNTIME, train=train)))
    legacy = cfg.legacy_sections()
    assert "runtime" not in legacy and legacy["train"]["device"] == "cpu" and legacy["data"]["cache_dir"] == "/tmp/elsewhere"
    assert "warmup_steps" not in legacy["train"] and "warmup" in legacy["train"]
    loaded = RunConfig(**build_sections(RunConfig.SECTIONS, data=legacy))
    # the default warmup comes back spelled as a fraction: the same schedule, the same key
    assert loaded.replace(train={"warmup_fraction": cfg.train.warmup_fraction}) == cfg
    assert loaded.key_fields() == cfg.key_fields()


def test_runtime_keys_under_train_and_data_load_with_one_deprecation_note_per_file(tmp_path, capsys):
    today = RunConfig.load(_write(tmp_path / "today.yaml", tiny(runtime=RUNTIME)))
    assert capsys.readouterr().err == ""  # a file in today's layout: no note
    path = _write(tmp_path / "earlier.yaml", _earlier_layout(tiny(runtime=RUNTIME)))
    assert RunConfig.load(path) == today
    assert RunConfig.load(path) == today
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and note.startswith(f"{path}: deprecated: ")
    assert "train.device" in note and "data.cache_dir" in note and "runtime:" in note


def test_a_runtime_key_under_train_and_runtime_both_is_an_error_naming_both(tmp_path):
    data = tiny(train={"device": "cpu"}, runtime={"device": "cpu"})
    with pytest.raises(ConfigError, match=r"train\.device and runtime\.device are both set"):
        RunConfig.load(_write(tmp_path / "both.yaml", data))


def test_the_runtime_flags_keep_their_spelling_and_fill_the_runtime_section():
    cfg = _flags("--device", "cpu", "--num-threads", "3", "--compile", "--compile-mode", "max-autotune",
                 "--progress", "bar", "--peak-flops", "2e12", "--cache-dir", "/c", "--num-workers", "2",
                 "--save-ckpt-every", "2", "--preview-every", "7", "--allow-nonfinite", "--stop-at-step", "9")
    assert cfg.runtime == RuntimeConfig(device="cpu", num_threads=3, compile=True, compile_mode="max-autotune",
                                        progress="bar", peak_flops=2e12, cache_dir="/c", num_workers=2,
                                        save_every_epochs=2, preview_every=7, allow_nonfinite=True, stop_at_step=9)
    assert cfg.train == _flags().train


@pytest.mark.parametrize(("argv", "steps", "fraction"), [
    (["--warmup", "0.1"], None, 0.1), (["--warmup", "30"], 30, None), (["--warmup-steps", "30"], 30, None),
    (["--warmup_steps", "0"], 0, None), (["--warmup-fraction", "0.2"], None, 0.2), ([], None, None)])
def test_warmup_flags_set_steps_or_a_fraction(argv, steps, fraction):
    train = _flags(*argv).train
    assert (train.warmup_steps, train.warmup_fraction) == (steps, fraction)


def test_warmup_steps_and_fraction_from_flags_are_refused_before_any_run():
    with pytest.raises(ConfigError, match=r"warmup_steps=10 and warmup_fraction=0\.1 are both set") as exc:
        _flags("--warmup-steps", "10", "--warmup-fraction", "0.1")
    assert "\n" not in str(exc.value)


def test_train_warmup_in_a_yaml_file_still_loads_as_before(tmp_path):
    fraction = RunConfig.load(_write(tmp_path / "f.yaml", tiny(train={"warmup_steps": None, "warmup": 0.1})))
    steps = RunConfig.load(_write(tmp_path / "s.yaml", tiny(train={"warmup_steps": None, "warmup": 40})))
    assert (fraction.train.warmup_fraction, fraction.train.warmup_steps) == (0.1, None)
    assert (steps.train.warmup_fraction, steps.train.warmup_steps) == (None, 40)


def test_resolving_records_the_default_warmup_fraction():
    from mlproject.model.config import GPTConfig
    from mlproject.training.resolve import resolve

    _, train = resolve(GPTConfig(preset="nano"), TrainConfig(), 512)
    assert (train.warmup_steps, train.warmup_fraction) == (None, 0.05)
    _, train = resolve(GPTConfig(preset="nano"), from_dict(TrainConfig, {"warmup": 7}), 512)
    assert (train.warmup_steps, train.warmup_fraction) == (7, None)


def test_mlflow_params_keep_the_names_of_earlier_releases():
    cfg = RunConfig(**build_sections(RunConfig.SECTIONS, data=tiny(runtime=RUNTIME, train={"warmup_steps": 30})))
    params = cfg.params()
    assert params["train.device"] == "cpu" and params["data.cache_dir"] == "/tmp/elsewhere"
    assert params["train.warmup"] == 30.0 and not any(k.startswith("runtime.") for k in params)


def test_runtime_keys_under_train_train_the_same_run_as_under_runtime(tmp_path, cache_dir, monkeypatch):
    from mlproject.app.train import run_training

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = {}
    for layout in ("today", "earlier"):
        data = tiny(runtime={"cache_dir": str(cache_dir)},
                    tracking={"log_to_mlflow": False, "output_dir": str(tmp_path / layout), "run_name": layout})
        if layout == "earlier":
            data = _earlier_layout(data)
        outcome = run_training(RunConfig.load(_write(tmp_path / f"{layout}.yaml", data)))
        assert outcome.status == "FINISHED"
        results[layout] = {k: outcome.summary[k] for k in ("train_loss_last", "val_loss_best")}
    assert results["earlier"] == results["today"]
