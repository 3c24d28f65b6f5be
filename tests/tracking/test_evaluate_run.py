"""`mlproject evaluate` and `mlproject export-hf` against a real store: bpb in training runs,
dataset-prefixed metrics with intervals, the checkpoint's sha256, new linked runs, models:/ URIs,
the `evaluate` MLflow entry point, the HF export artifact, and lm-eval on a local task."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import ViewType

from helpers import REPO, VENV_BIN, deleted_soon, unique, use_store, write_tiny
from mlproject.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory, store_uri, cache_dir):
    """One finished tiny run with a LoggedModel, owned by this module (its tests log into it)."""
    from mlproject.app.config import RunConfig
    from mlproject.tracking.train_tracker import train_tracked

    tmp = tmp_path_factory.mktemp("evaluated")
    with pytest.MonkeyPatch.context() as mp:
        use_store(mp, store_uri, cache_dir)
        # evaluate runs fp32: the trainer's figures must be fp32 to match to 1e-5
        path = write_tiny(tmp / "train.yaml", "test-evaluate", train={"precision": "fp32"},
                          tracking={"log_model": True})
        outcome = train_tracked(RunConfig.load(path))
        mlflow.set_tracking_uri(None)
    assert outcome.status == "FINISHED"
    return outcome


def sha256_of(uri: str, tmp_path: Path) -> str:
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path)))
    return hashlib.sha256(local.read_bytes()).hexdigest()


def metrics_of(run_id: str) -> dict[str, float]:
    return MlflowClient().get_run(run_id).data.metrics


def test_training_logs_val_bpb_at_every_eval_and_val_bpb_best_at_the_best_loss(run):
    client = MlflowClient()
    losses = {m.step: m.value for m in client.get_metric_history(run.run_id, "val_loss")}
    bpbs = {m.step: m.value for m in client.get_metric_history(run.run_id, "val_bpb")}
    assert set(bpbs) == set(losses) == {4, 8, 12}
    best_step = min(losses, key=losses.get)
    assert metrics_of(run.run_id)["val_bpb_best"] == pytest.approx(bpbs[best_step])
    # one split, fixed windows: bpb is the loss times a constant tokens-per-byte ratio
    ratios = {s: bpbs[s] / losses[s] for s in losses}
    assert max(ratios.values()) == pytest.approx(min(ratios.values()), rel=1e-6)


def test_evaluate_on_the_runs_windows_reproduces_its_val_loss_and_bpb(run, tmp_path, capsys):
    # the trainer evaluated eval_batches=2 x batch_size=4 windows of 32 tokens: the same 256 targets
    assert main(["evaluate", "--run-id", run.run_id, "--max-tokens", "256", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "pydocs: 256 tokens" in out and "bpb" in out
    m = metrics_of(run.run_id)
    assert m["eval/pydocs/loss"] == pytest.approx(m["val_loss_best"], rel=1e-5)
    assert m["eval/pydocs/bpb"] == pytest.approx(m["val_bpb_best"], rel=1e-5)
    assert m["eval/pydocs/ppl"] == pytest.approx(math.exp(m["eval/pydocs/loss"]), rel=1e-6)
    for name in ("loss", "ppl", "bpb", "token_acc"):
        assert m[f"eval/pydocs/{name}_ci95_low"] <= m[f"eval/pydocs/{name}"] <= m[f"eval/pydocs/{name}_ci95_high"]
    assert m["eval/pydocs/batches"] == 2 and m["eval/pydocs/tokens"] == 256
    result = json.loads(out.strip().splitlines()[-1].split(" ", 1)[1])  # the line the pipeline runner reads
    assert result == {"step": "evaluate", "run_id": run.run_id, "evaluated_run": run.run_id, "status": "FINISHED",
                      "checkpoint_sha256": sha256_of(run.checkpoint_uris["best"], tmp_path)}


def test_evaluate_records_the_sha256_of_the_checkpoint_it_evaluated(run, tmp_path):
    assert main(["evaluate", "--run-id", run.run_id, "--max-tokens", "64"]) == 0
    tags = MlflowClient().get_run(run.run_id).data.tags
    expected = sha256_of(run.checkpoint_uris["best"], tmp_path)
    assert tags["mlproject.eval.checkpoint_sha256"] == expected
    assert tags["mlproject.eval.pydocs.checkpoint_sha256"] == expected
    assert tags["mlproject.eval.checkpoint"] == run.checkpoint_uris["best"]


def test_a_checkpoint_with_another_sha256_than_expected_is_refused_before_logging(run, capsys):
    before = metrics_of(run.run_id)
    assert main(["evaluate", "--run-id", run.run_id, "--max-tokens", "64", "--datasets", "pydocs",
                 "--local-path", __file__, "--local-format", "text", "--local-name", "never",
                 "--expected-sha256", "0" * 64]) == 2
    err = capsys.readouterr().err
    assert "not expected_sha256=" + "0" * 64 in err and len(err.strip().splitlines()) == 1
    assert "eval/never/bpb" not in metrics_of(run.run_id) and metrics_of(run.run_id).keys() == before.keys()


def test_new_run_gets_the_metrics_and_a_tag_linking_the_evaluated_run(run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("Some local text to evaluate on.\n\nA second document, with a few more words in it.\n" * 20)
    assert main(["evaluate", "--run-id", run.run_id, "--local-path", str(notes), "--local-format", "text",
                 "--max-tokens", "128", "--batch-size", "2", "--new-run"]) == 0
    client = MlflowClient()
    experiment_id = client.get_run(run.run_id).info.experiment_id
    (new,) = client.search_runs([experiment_id], f"tags.`mlproject.evaluated_run` = '{run.run_id}'")
    assert new.info.run_id != run.run_id
    assert new.data.metrics["eval/notes/bpb"] > 0 and "eval/notes/loss_ci95_low" in new.data.metrics
    assert new.data.tags["mlproject.eval.checkpoint_sha256"] == sha256_of(run.checkpoint_uris["best"], tmp_path)
    assert "eval/notes/bpb" not in metrics_of(run.run_id)


def test_models_uri_is_evaluated_and_logged_to_the_run_it_came_from(run, tmp_path):
    assert main(["evaluate", "--model-uri", run.model_uri, "--max-tokens", "64", "--local-path", __file__,
                 "--local-format", "text", "--local-name", "source"]) == 0
    tags = MlflowClient().get_run(run.run_id).data.tags
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=run.model_uri, dst_path=str(tmp_path)))
    assert tags["mlproject.eval.source.checkpoint_sha256"] == hashlib.sha256(
        (local / "artifacts" / "model.safetensors").read_bytes()).hexdigest()  # the weights evaluated
    assert "eval/source/bpb" in metrics_of(run.run_id)


def test_a_hub_dataset_offline_is_a_one_line_error(run, capsys):
    assert main(["evaluate", "--run-id", run.run_id, "--datasets", "wikitext2"]) == 2
    err = capsys.readouterr().err
    assert "wikitext2" in err and "HF_HUB_OFFLINE" in err and len(err.strip().splitlines()) == 1


@pytest.mark.e2e
def test_mlflow_entry_point_evaluate_logs_to_the_evaluated_run_and_leaves_no_empty_run(run, tmp_path):
    experiment = unique("entry-evaluate")
    done = subprocess.run([str(VENV_BIN / "mlflow"), "run", str(REPO), "-e", "evaluate", "--env-manager", "local",
                           "--experiment-name", experiment, "-P", f"run_id={run.run_id}", "-P", "max_tokens=96",
                           "-P", f"local_path={__file__}", "-P", "local_format=text", "-P", "local_name=entry"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert metrics_of(run.run_id)["eval/entry/tokens"] == 96
    # `mlflow run`'s own run held nothing: it links the evaluated run and is deleted
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (outer,) = client.search_runs([experiment_id], run_view_type=ViewType.ALL)
    assert outer.data.tags["mlproject.evaluated_run"] == run.run_id
    assert deleted_soon(outer.info.run_id).info.status == "FINISHED"


def test_export_hf_logs_an_artifact_folder_that_transformers_loads_with_our_logits(run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mlproject.model.checkpoint import load_model_checkpoint

    assert main(["export-hf", "--run-id", run.run_id, "--output", str(tmp_path / "hf")]) == 0
    local = Path(mlflow.artifacts.download_artifacts(run_id=run.run_id, artifact_path="hf",
                                                     dst_path=str(tmp_path / "download")))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in local.iterdir()}
    hf = AutoModelForCausalLM.from_pretrained(local, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(local, local_files_only=True)
    checkpoint = mlflow.artifacts.download_artifacts(run.checkpoint_uris["best"], dst_path=str(tmp_path))
    ours, _ = load_model_checkpoint(checkpoint)
    idx = torch.tensor([tok("def main():\n    return 0")["input_ids"]])
    with torch.no_grad():
        assert (hf(idx).logits - ours(idx)[0]).abs().max().item() < 1e-4
    assert MlflowClient().get_run(run.run_id).data.tags["mlproject.hf_export_class"] == "GPT2LMHeadModel"


def test_export_hf_with_log_transformers_logs_a_transformers_flavor_model(run, tmp_path):
    assert main(["export-hf", "--run-id", run.run_id, "--output", str(tmp_path / "hf"), "--log-transformers"]) == 0
    client = MlflowClient()
    experiment_id = client.get_run(run.run_id).info.experiment_id
    models = [m for m in client.search_logged_models([experiment_id]) if m.source_run_id == run.run_id
              and m.name == "hf_model"]
    assert len(models) == 1
    flavors = mlflow.models.get_model_info(models[0].model_uri).flavors
    assert flavors["transformers"]["task"] == "text-generation"


def test_export_hf_of_a_gpt3_run_with_biases_logs_custom_code_and_says_so(tmp_path, capsys):
    """The default GPT-3 (biases, banded layers) exports only as custom code, on the flag; the run's
    tag and the printed line say which kind it is; the transformers flavor is refused before any write."""
    from mlproject.app.config import RunConfig
    from mlproject.model.export_plan import CUSTOM_KIND
    from mlproject.tracking.train_tracker import train_tracked

    path = write_tiny(tmp_path / "train.yaml", "test-export-custom", model={"model_version": "gpt3"},
                      train={"max_steps": 4, "eval_interval": 4, "save_every": 4})
    outcome = train_tracked(RunConfig.load(path))
    assert "export: only as custom code (export-hf --allow-custom-code" in capsys.readouterr().out
    args = ["export-hf", "--run-id", outcome.run_id, "--output", str(tmp_path / "hf")]
    assert main([*args, "--allow-custom-code", "--log-transformers"]) == 2
    assert "--log-transformers logs built-in transformers classes only" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()
    assert main([*args, "--allow-custom-code"]) == 0
    assert f"({CUSTOM_KIND}, sha256" in capsys.readouterr().out
    assert MlflowClient().get_run(outcome.run_id).data.tags["mlproject.hf_export_class"] == CUSTOM_KIND
    local = Path(mlflow.artifacts.download_artifacts(run_id=outcome.run_id, artifact_path="hf",
                                                     dst_path=str(tmp_path / "download")))
    assert {"modeling_mlproject_gpt.py", "mlproject_gpt.py", "model.safetensors"} <= {p.name for p in local.iterdir()}


LM_EVAL_TASK = """\
task: tiny_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""

HUB_TASK = """\
task: tiny_hub
dataset_path: mlproject-tests/not-downloaded
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
"""


@pytest.mark.e2e
def test_lm_eval_runs_a_local_task_end_to_end_offline_and_logs_metrics_with_stderr(run, tmp_path, monkeypatch,
                                                                                    capsys):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rows = [{"question": "def f(x):\n    return", "choices": [" x", " zzzz"], "answer": 0},
            {"question": "import", "choices": [" os", " !!!!"], "answer": 0},
            {"question": "class Point:\n   ", "choices": [" x: int", " ]]]"], "answer": 0},
            {"question": "The value of", "choices": [" the", " qqqq"], "answer": 1}]
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tasks / "tiny_local.yaml").write_text(LM_EVAL_TASK.format(data=tasks / "data.jsonl"))
    (tasks / "tiny_hub.yaml").write_text(HUB_TASK)

    assert main(["evaluate", "--run-id", run.run_id, "--max-tokens", "64", "--tasks", "tiny_local",
                 "--task-dir", str(tasks), "--new-run"]) == 0
    client = MlflowClient()
    (new,) = client.search_runs([client.get_run(run.run_id).info.experiment_id],
                                f"tags.`mlproject.evaluated_run` = '{run.run_id}' and "
                                "metrics.`lm_eval/tiny_local/acc` >= 0")
    acc, stderr = new.data.metrics["lm_eval/tiny_local/acc"], new.data.metrics["lm_eval/tiny_local/acc_stderr"]
    assert acc in (0.0, 0.25, 0.5, 0.75, 1.0) and stderr >= 0  # 4 questions
    assert "eval/pydocs/bpb" in new.data.metrics

    capsys.readouterr()
    assert main(["evaluate", "--run-id", run.run_id, "--max-tokens", "64", "--tasks", "tiny_hub",
                 "--task-dir", str(tasks), "--log-to-mlflow", "false"]) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mlproject: error:")]
    assert "tiny_hub" in error and "not in the local cache" in error
