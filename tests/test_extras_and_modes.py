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


# ----------------------------------------------------------------------------- every extra missing, as users meet it

def _without(modules: list[str], code: str, tmp_path) -> "subprocess.CompletedProcess[str]":
    """Run `code` in a fresh interpreter where `modules` cannot be imported (None in sys.modules)."""
    import subprocess

    hide = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    return subprocess.run([sys.executable, "-c", hide + code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


def _cli(argv: list[str]) -> str:
    return f"from mlproject.cli import main\nraise SystemExit(main({argv!r}))\n"


def test_tune_without_optuna_is_one_line_naming_tune_in_a_fresh_process(tmp_path):
    done = _without(["optuna"], _cli(["tune", "--config", str(REPO / "configs/tune/lr_search_offline.yaml")]),
                    tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["mlproject: error: tune needs the optional extra 'tune': "
                                        "pip install 'mlproject[tune]'"]


def test_evaluate_tasks_without_lm_eval_names_eval_before_any_work(tmp_path):
    # Checked first: the missing checkpoint (or minutes of evaluation) would otherwise come first.
    argv = ["evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--tokenizer-path",
            str(tmp_path / "missing.json"), "--tasks", "hellaswag"]
    done = _without(["lm_eval"], _cli(argv), tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["mlproject: error: evaluate --tasks needs the optional extra 'eval': "
                                        "pip install 'mlproject[eval]'"]


def test_a_gpu_without_nvidia_ml_py_is_one_note_naming_gpu(tmp_path):
    code = ("import torch\ntorch.cuda.is_available = lambda: True  # a GPU machine, as MLflow's monitor sees it\n"
            "from mlproject.app.config import TrackingConfig\n"
            "from mlproject.tracking.run_context import configure_system_metrics\n"
            "configure_system_metrics(TrackingConfig())\nconfigure_system_metrics(TrackingConfig())\n")
    done = _without(["pynvml"], code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["note: GPU utilisation and memory are not in the system metrics: "
                                        "nvidia-ml-py is not installed; it comes with the optional extra 'gpu': "
                                        "pip install 'mlproject[gpu]'"]


def test_no_gpu_no_note():
    from mlproject.tracking.run_context import gpu_metrics_note

    import torch

    assert torch.cuda.is_available() or gpu_metrics_note() is None


@pytest.mark.parametrize("hidden, module, extra", [
    ("optuna", "optuna", "tune"), ("lm_eval", "lm_eval.tasks", "eval"), ("pynvml", "pynvml", "gpu"),
    ("airflow.providers.cncf.kubernetes", "airflow.providers.cncf.kubernetes.operators.pod", "kubernetes"),
    ("kubernetes", "kubernetes.client", "kubernetes"), ("transformers", "transformers", "dev")])
def test_an_unguarded_import_of_an_extra_still_names_the_extra(monkeypatch, hidden, module, extra):
    import importlib

    from mlproject.errors import missing_extra

    for name in [m for m in sys.modules if m == hidden or m.startswith(hidden + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, hidden, None)
    with pytest.raises(ModuleNotFoundError) as info:
        importlib.import_module(module)
    assert missing_extra(info.value).endswith(f"optional extra {extra!r}: pip install 'mlproject[{extra}]'")


def test_any_other_missing_module_is_not_blamed_on_an_extra():
    from mlproject.errors import missing_extra

    assert missing_extra(ModuleNotFoundError("No module named 'numpyy'", name="numpyy")) is None


def test_the_cli_turns_an_unguarded_extra_import_into_one_line_and_exit_code_2(tmp_path):
    # the last line of defence in main(): any command that reaches an extra's module unguarded
    code = ("import mlproject.cli as cli\n"
            "def handler(args):\n    import optuna\n"
            "cli.COMMANDS['datasets'] = cli.Command(handler, cli.COMMANDS['datasets'].sections, 'x')\n"
            "raise SystemExit(cli.main(['datasets']))\n")
    done = _without(["optuna"], code, tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["mlproject: error: optuna is not installed; it comes with the optional "
                                        "extra 'tune': pip install 'mlproject[tune]'"]
