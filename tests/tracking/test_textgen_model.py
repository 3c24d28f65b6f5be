"""The logged model as MLflow users load it: a pyfunc text-generation model, served by
`mlflow models serve`, that loads with pickle deserialization off and runs no code from its files."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from helpers import REPO, VENV_BIN, free_port
from mlproject.cli import main
from mlproject.inference.config import GenerateConfig
from mlproject.app.generate import run_generate
from mlproject.tracking.model_store import MlflowModelStore

PROMPTS = ["The module", "def"]


def _version(name: str = "tiny-gpt") -> str:
    return MlflowClient().search_model_versions(f"name='{name}'")[0].version


def _greedy(model_uri: str, prompts: list[str], max_new_tokens: int = 6) -> list[str]:
    return run_generate(GenerateConfig(model_uri=model_uri, prompts=prompts, max_new_tokens=max_new_tokens,
                                       temperature=0.0, stream=False, device="cpu"), MlflowModelStore())


def _serve(model_uri: str, port: int, log: Path) -> subprocess.Popen:
    """`mlflow models serve` from the venv (its uvicorn must be on PATH) on 127.0.0.1."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.Popen([str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def test_the_logged_model_loads_with_pickle_deserialization_off_and_returns_text(trained, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    model = mlflow.pyfunc.load_model(f"models:/tiny-gpt/{_version()}")
    settings = {"max_new_tokens": 5, "temperature": 0.8, "top_k": 20, "top_p": 0.9, "seed": 7}
    from_list = model.predict(PROMPTS, params=settings)
    assert len(from_list) == 2 and all(isinstance(t, str) for t in from_list)
    assert from_list[0].startswith("The module") and from_list[1].startswith("def")
    assert model.predict(pd.DataFrame({"prompt": PROMPTS}), params=settings) == from_list  # same seed, same text
    assert model.predict(pd.Series(PROMPTS), params=settings) == from_list


def test_the_model_declares_prompts_in_text_out_generation_params_and_an_input_example(trained):
    info = mlflow.models.get_model_info(f"models:/tiny-gpt/{_version()}")
    assert [c.type.name for c in info.signature.inputs.inputs] == ["string"]
    assert {p.name for p in info.signature.params} >= {"max_new_tokens", "temperature", "top_k", "top_p", "seed"}
    assert info.saved_input_example_info is not None
    assert "python_function" in info.flavors and "pytorch" not in info.flavors


def test_the_weights_are_stored_once_as_safetensors_and_nothing_is_pickled(trained, tmp_path):
    local = Path(mlflow.artifacts.download_artifacts(f"models:/tiny-gpt/{_version()}", dst_path=str(tmp_path)))
    files = [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]
    assert "artifacts/model.safetensors" in files
    assert not [f for f in files if f.endswith((".pt", ".pth", ".pkl", ".pickle", ".bin"))]
    weights = (local / "artifacts/model.safetensors").stat().st_size
    params_total = MlflowClient().get_run(trained.run_id).data.metrics["params_total"]
    assert weights < 1.1 * 4 * params_total  # float32, the tied embedding once


def test_greedy_predict_equals_mlproject_generate_greedy_also_through_an_alias(trained, capsys):
    version = _version()
    MlflowClient().set_registered_model_alias("tiny-gpt", "best", version)
    pyfunc = mlflow.pyfunc.load_model(f"models:/tiny-gpt/{version}")
    predicted = pyfunc.predict(PROMPTS, params={"max_new_tokens": 6, "temperature": 0.0})
    assert predicted == _greedy(f"models:/tiny-gpt/{version}", PROMPTS)
    capsys.readouterr()
    assert main(["generate", "--model-uri", "models:/tiny-gpt@best", "--prompts", PROMPTS[0],
                 "--max-new-tokens", "6", "--temperature", "0", "--device", "cpu", "--stream", "false"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == predicted[0].splitlines()


@pytest.mark.e2e
def test_mlflow_models_serve_answers_two_prompts_with_two_strings(trained, tmp_path):
    model_uri = f"models:/tiny-gpt/{_version()}"
    expected = _greedy(model_uri, PROMPTS)
    port = free_port()
    proc = _serve(model_uri, port, tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
        body = json.dumps({"inputs": PROMPTS, "params": {"max_new_tokens": 6, "temperature": 0.0}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
            predictions = json.loads(response.read())["predictions"]
    finally:
        _stop(proc)
    assert predictions == expected and len(predictions) == 2


# ----------------------------------------------------------------------------- tampering

class _Payload:
    """Unpickling this runs a shell command: what an attacker would put in a model file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.e2e
def test_a_tampered_logged_model_runs_no_code_through_any_loader(trained, tmp_path, monkeypatch):
    """The weights file replaced by a pickle payload (and one planted as data/model.pth), with
    MLflow's own default (3.17: pickle deserialization allowed): every loader refuses, none runs it."""
    from mlproject.tracking.artifacts import download_tokenizer, load_logged_model, log_model
    from mlproject.model.checkpoint import load_model_checkpoint

    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    marker = tmp_path / "PWNED"
    model, _ = load_model_checkpoint(Path(MlflowClient().download_artifacts(
        trained.run_id, "checkpoints/last.pt", str(tmp_path))))
    tokenizer = download_tokenizer(trained.run_id, tmp_path)
    with mlflow.start_run(experiment_id=MlflowClient().create_experiment("test-tampered")):
        uri = log_model(model, tokenizer_path=tokenizer, register_as=None, step=0)
    location = MlflowClient().get_logged_model(uri.split("/")[-1]).artifact_location
    stored = Path(location.removeprefix("file://"))
    for target in (stored / "artifacts" / "model.safetensors", stored / "data" / "model.pth"):
        target.parent.mkdir(exist_ok=True)
        torch.save(_Payload(marker), target)

    with pytest.raises(Exception):
        mlflow.pyfunc.load_model(uri)
    with pytest.raises(Exception):
        mlflow.pytorch.load_model(uri)
    with pytest.raises(Exception, match="not a safetensors file"):
        load_logged_model(uri, tmp_path / "dl")
    cli = subprocess.run([str(VENV_BIN / "mlproject"), "generate", "--model-uri", uri, "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 2 and cli.stderr.strip().count("\n") == 0, cli.stderr[-2000:]
    assert "not a safetensors file" in cli.stderr
    proc = _serve(uri, free_port(), tmp_path / "serve.log")
    try:
        assert proc.wait(timeout=300) != 0  # the server cannot load the model and exits
    finally:
        _stop(proc)
    assert not marker.exists()

    torch.load(stored / "data" / "model.pth", weights_only=False)  # the payload is live: unpickling runs it
    assert marker.exists()


@pytest.mark.e2e
def test_a_generate_run_logs_its_settings_and_a_table_of_prompts_and_outputs(trained, tmp_path):
    experiment = "test-generate-run"
    done = subprocess.run(
        [str(VENV_BIN / "mlflow"), "run", str(REPO), "-e", "generate", "--env-manager", "local",
         "--experiment-name", experiment, "-P", f"model_uri=models:/tiny-gpt/{_version()}",
         "-P", "prompts=The module", "-P", "max_new_tokens=6", "-P", "temperature=0", "-P", "device=cpu"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])[0]
    assert run.data.params["generate.temperature"] == "0.0" and run.data.params["generate.max_new_tokens"] == "6"
    local = client.download_artifacts(run.info.run_id, "generations.json", str(tmp_path))
    table = json.loads(Path(local).read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [r["prompt"] for r in rows] == ["The module"]
    assert rows[0]["output"] == _greedy(f"models:/tiny-gpt/{_version()}", ["The module"])[0]
    assert run.info.run_name == "generate" and "generations.json" in run.data.tags["mlflow.note.content"]
