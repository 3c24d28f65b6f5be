"""Optional extras fail with one line naming the extra; written files get the umask's modes."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from helpers import REPO
from mlproject.errors import MlprojectError, require_extra
from mlproject.io import atomic_path, atomic_write_text
from mlproject.outdir import output_folder


def test_a_missing_extra_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now raises ImportError
    with pytest.raises(MlprojectError) as info:
        require_extra("optuna", "tune", "tune")
    assert str(info.value) == "tune needs the optional extra 'tune': pip install 'mlproject[tune]'"


def test_tune_without_optuna_is_one_line_and_exit_code_2(monkeypatch, tmp_path, capsys):
    from mlproject.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setitem(sys.modules, "optuna", None)
    for name in [m for m in sys.modules if m.startswith("optuna.")]:
        monkeypatch.setitem(sys.modules, name, None)
    code = main(["tune", "--config", str(REPO / "configs/tune/lr_search_offline.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["mlproject: error: tune needs the optional extra 'tune': pip install 'mlproject[tune]'"]


@pytest.mark.parametrize("module, extra, feature", [("transformers", "dev", "exporting to Hugging Face (export-hf)"),
                                                    ("lm_eval", "eval", "evaluate --tasks")])
def test_each_optional_import_goes_through_the_helper(monkeypatch, module, extra, feature):
    from mlproject.inference.harness import _lm_eval
    from mlproject.model.hf_export import _transformers

    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "accelerate", sys.modules.get("accelerate") or object())
    with pytest.raises(MlprojectError) as info:
        (_transformers if module == "transformers" else _lm_eval)()
    assert str(info.value) == f"{feature} needs the optional extra '{extra}': pip install 'mlproject[{extra}]'"


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _private_file(path) -> None:
    """As safetensors (and mkstemp) write: 0o600 whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"weights")
    os.close(fd)


def test_atomic_writes_follow_the_umask_like_a_plain_open(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "model.safetensors") as tmp:
            _private_file(tmp)
        atomic_write_text(tmp_path / "config.json", "{}")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "model.safetensors") == _mode(tmp_path / "config.json") == _mode(tmp_path / "plain.txt") \
        == 0o640


def test_an_exported_folders_files_all_have_the_same_mode(tmp_path):
    old = os.umask(0o022)
    try:
        with output_folder(tmp_path / "hf", "export-hf") as tmp:
            _private_file(tmp / "model.safetensors")
            (tmp / "config.json").write_text("{}")
    finally:
        os.umask(old)
    modes = {p.name: _mode(p) for p in (tmp_path / "hf").iterdir()}
    assert modes["model.safetensors"] == 0o644
    assert set(modes.values()) == {0o644}
