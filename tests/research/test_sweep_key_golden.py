"""Every sweep's key is stored on its runs in users' tracking stores, and `--resume` finds a sweep
by it. A change to the key (a new config field, a renamed one, a changed default) silently stops
every existing sweep from resuming: they no longer match and start over. So the keys of the
repository's offline configs are pinned here, as the last landed release computed them.

When this test fails, either the new field only changes how fast a run goes (add it to
`research.sweep.RUNTIME_FIELDS`, and the keys come back), or the change is deliberate: update the
keys and say in the release notes that sweeps planned before it no longer resume.
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
    assert _key() == _key("--num-threads", "1", "--device", "cpu", "--progress", "lines", "--cache-dir", "/elsewhere")
    assert _key("--learning-rate", "1e-4") != _key()


def _key(*flags: str) -> str:
    """The compare config's sweep key with `flags` given as on the command line."""
    from mlproject.cli import build_parser

    path = str(CONFIGS / "compare/gpt2_vs_gpt3_small_fair_offline.yaml")
    args = build_parser().parse_args(["compare", "--config", path, *flags])
    return CompareJob.load(path, args).spec().key
