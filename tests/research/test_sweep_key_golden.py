"""Every sweep's key is stored on its runs in users' tracking stores, and `--resume` finds a sweep
by it. A change to the key (a new config field, a renamed one, a changed default) silently stops
every existing sweep from resuming: they no longer match and start over. So the keys of the
repository's offline configs are pinned here, as the last landed release computed them.

When this test fails, either the new field only changes how fast a run goes (put it in the
runtime section, `training.config.RuntimeConfig`, which is no part of the key, and the keys come
back), or it was renamed or split (spell it as before in `app.config.legacy_layout`, as the
warmup is), or the change is deliberate: update the keys and say in the release notes that
sweeps planned before it no longer resume.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlproject.research.ablation import AblationJob
from mlproject.research.compare import CompareJob

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GOLDEN = {
    "compare/gpt2_vs_gpt3_small_fair_offline.yaml": (CompareJob, "3d9abe733343f793"),
    "ablation/norm_ablation_gpt3_small_offline.yaml": (AblationJob, "2a2b8b70acce05aa"),
}


@pytest.mark.parametrize("path", sorted(GOLDEN))
def test_the_sweep_key_of_a_shipped_config_is_what_stores_already_hold(path, monkeypatch, tmp_path):
    job, key = GOLDEN[path]
    monkeypatch.setenv("MLPROJECT_CACHE_DIR", str(tmp_path))  # a runtime field: no part of the key
    assert job.load(str(CONFIGS / path)).spec().key == key


def test_runtime_fields_leave_the_key_alone_and_a_computed_field_changes_it():
    assert _key() == _key("--num-threads", "1", "--device", "cpu", "--progress", "lines", "--cache-dir", "/elsewhere",
                          "--num-workers", "2", "--peak-flops", "1e12", "--compile-mode", "default",
                          "--preview-every", "5", "--save-ckpt-every", "1", "--allow-nonfinite")
    assert _key("--learning-rate", "1e-4") != _key()


def test_the_warmup_spelled_as_steps_or_a_fraction_keeps_the_key_of_the_single_value():
    assert _key("--warmup-fraction", "0.05") == _key()  # the default, 5% of the run
    assert _key("--warmup-steps", "40") == _key("--warmup", "40") != _key()


@pytest.mark.parametrize("path", sorted(GOLDEN))
def test_a_shipped_config_with_runtime_keys_under_train_has_the_same_key(path, monkeypatch, tmp_path):
    import yaml

    job, key = GOLDEN[path]
    data = yaml.safe_load((CONFIGS / path).read_text())
    data.setdefault("train", {}).update({"device": "cpu", "num_threads": 1, "progress": "lines"})
    data.setdefault("data", {})["cache_dir"] = str(tmp_path)
    earlier = tmp_path / "earlier.yaml"
    earlier.write_text(yaml.safe_dump(data))
    assert job.load(str(earlier)).spec().key == key


def _key(*flags: str) -> str:
    """The compare config's sweep key with `flags` given as on the command line."""
    from mlproject.cli import build_parser

    path = str(CONFIGS / "compare/gpt2_vs_gpt3_small_fair_offline.yaml")
    args = build_parser().parse_args(["compare", "--config", path, *flags])
    return CompareJob.load(path, args).spec().key
