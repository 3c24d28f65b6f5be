"""The local pipeline runner: order, results passed between steps, report, failures, resume.

Steps run a fake `mlflow` (first on PATH) that records its arguments and prints an
MLPROJECT_RESULT line, so these tests exercise the runner, not training.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlproject.orchestration.config import PipelineOptions
from mlproject.orchestration.runner import run_pipeline

FAKE_MLFLOW = textwrap.dedent('''\
    import json, os, sys
    args = sys.argv[1:]
    SWEEP_EXTRA = {"compare": {"power": ["gpt3 vs gpt2: 2 seeds: the test has no power to speak of"],
                               "best_alias": "no candidate beat gpt2 at 0.05 (Holm)"}}
    entry_point = args[args.index("-e") + 1]
    params = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "-P")
    with open(os.environ["FAKE_MLFLOW_LOG"], "a") as log:
        log.write(json.dumps({"entry_point": entry_point, "params": params, "args": args,
                              "mlflow_run_id": os.environ.get("MLFLOW_RUN_ID")}) + "\\n")
    once = params.get("fail_once")
    if params.get("fail") == "true" or (once and not os.path.exists(once)):
        if once:
            open(once, "w").close()
        print("Traceback (most recent call last):\\nRuntimeError: boom")
        sys.exit(3)
    print("MLPROJECT_RESULT {\\"step\\": \\"other\\", \\"run_id\\": \\"not-this-one\\"}")
    print("MLPROJECT_RESULT " + json.dumps({"step": entry_point, "run_id": "run-" + params.get("name", entry_point),
                                            "status": "FINISHED", **SWEEP_EXTRA.get(entry_point, {})}))
''')


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module, created here before any step process starts (concurrent
    schema migrations of a fresh SQLite file fail)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the store's default artifact root (./mlruns) lands in the temp folder
        MlflowClient(tracking_uri=uri).search_experiments()
    return uri


@pytest.fixture
def tracking_env(store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The module's store, no inherited MLflow run, the test's own working directory."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MLPROJECT_CACHE_DIR", str(tmp_path / "cache"))  # reports under `mlflow run` go there
    monkeypatch.delenv("MLPROJECT_LOCAL_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(store_uri)
    yield store_uri
    mlflow.set_tracking_uri(None)


@pytest.fixture
def fake_mlflow(tracking_env, tmp_path, monkeypatch):
    """A fake `mlflow` first on PATH; returns a function reading its calls."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    script = bin_dir / "mlflow"
    script.write_text(f"#!{sys.executable}\n{FAKE_MLFLOW}")
    script.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MLFLOW_LOG", str(log))

    def calls() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return calls


def write_pipeline(path: Path, steps: list[dict], name: str = "testpipe") -> Path:
    path.write_text(yaml.safe_dump({"pipeline": {"name": name, "experiment_name": f"exp-{name}"}, "steps": steps},
                                   sort_keys=False))
    return path


STEPS = [  # listed out of order on purpose: plot needs compare
    {"id": "plot", "entry_point": "plot", "needs": ["compare"],
     "parameters": {"name": "plot", "parent_run_id": "{{ steps.compare.run_id }}"}},
    {"id": "compare", "entry_point": "compare", "parameters": {"name": "compare", "seeds": [42, 43]}},
]


def report_of(root: Path) -> dict:
    reports = [*root.glob("mlproject-outputs/pipeline_runs/*/report.json"),
               *root.glob("cache/pipeline_runs/*/*/report.json")]  # the second: a pipeline under `mlflow run`
    (path,) = sorted(reports, key=lambda p: p.parent.name)[-1:]
    return json.loads(path.read_text())


def test_dry_run_prints_commands_in_dependency_order_and_runs_nothing(fake_mlflow, tmp_path, capsys):
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    assert run_pipeline(PipelineOptions(str(path), dry_run=True)) == 0
    out = capsys.readouterr().out
    assert out.index("-e compare") < out.index("-e plot")
    assert "parent_run_id=<steps.compare.run_id>" in out
    assert fake_mlflow() == []
    assert not (tmp_path / "mlproject-outputs").exists()


def test_steps_run_in_dependency_order_passing_run_ids(fake_mlflow, tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    assert run_pipeline(PipelineOptions(str(path))) == 0
    calls = fake_mlflow()
    assert [c["entry_point"] for c in calls] == ["compare", "plot"]
    assert calls[0]["params"]["seeds"] == "42 43"
    assert calls[1]["params"]["parent_run_id"] == "run-compare"
    assert "--experiment-name" in calls[0]["args"]


def test_the_summary_prints_how_to_reproduce_the_sweep_but_not_the_plot(fake_mlflow, tmp_path, capsys):
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    assert run_pipeline(PipelineOptions(str(path))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.strip() for line in lines if "reproduce:" in line] == ["reproduce: mlproject reproduce --run-id run-compare"]


def test_the_summary_prints_the_sweeps_power_and_alias_decision(fake_mlflow, tmp_path, capsys):
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    assert run_pipeline(PipelineOptions(str(path))) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert "power: gpt3 vs gpt2: 2 seeds: the test has no power to speak of" in lines
    assert "alias best: no candidate beat gpt2 at 0.05 (Holm)" in lines


def test_report_records_each_step(fake_mlflow, tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    run_pipeline(PipelineOptions(str(path)))
    report = report_of(tmp_path)
    assert report["status"] == "succeeded"
    compare = next(s for s in report["steps"] if s["id"] == "compare")
    assert compare["status"] == "succeeded" and compare["run_id"] == "run-compare"
    assert compare["return_code"] == 0 and compare["command"][:2] == ["mlflow", "run"]
    assert compare["started_at"] and compare["ended_at"]


def test_report_is_logged_to_the_pipeline_run(fake_mlflow, tmp_path):
    from mlflow import MlflowClient

    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    run_pipeline(PipelineOptions(str(path)))
    run = MlflowClient().get_run(report_of(tmp_path)["pipeline_run_id"])
    assert run.info.status == "FINISHED"
    assert "report.json" in [f.path for f in MlflowClient().list_artifacts(run.info.run_id)]
    assert run.data.tags["mlproject.step.compare.run_id"] == "run-compare"


def test_a_pipeline_run_made_by_mlflow_run_gets_the_pipelines_name_and_a_step_table(fake_mlflow, tmp_path,
                                                                                    monkeypatch):
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment(f"pipe-named-{tmp_path.name}")
    pipeline_run = client.create_run(experiment_id).info.run_id  # a random name, as `mlflow run` gives
    monkeypatch.setenv("MLFLOW_RUN_ID", pipeline_run)
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    assert run_pipeline(PipelineOptions(str(path))) == 0
    run = client.get_run(pipeline_run)
    assert run.info.run_name == report_of(tmp_path)["pipeline"]
    note = run.data.tags["mlflow.note.content"]
    assert "| compare&emsp; | compare&emsp; | succeeded&emsp; | `run-compare`&emsp; |" in note
    assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.name"]


def test_steps_do_not_inherit_the_pipelines_own_mlflow_run(fake_mlflow, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment(f"pipe-{tmp_path.name}")
    pipeline_run = client.create_run(experiment_id).info.run_id  # as `mlflow run -e pipeline` would
    monkeypatch.setenv("MLFLOW_RUN_ID", pipeline_run)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    assert run_pipeline(PipelineOptions(str(path))) == 0
    assert [c["mlflow_run_id"] for c in fake_mlflow()] == [None, None]
    assert report_of(tmp_path)["pipeline_run_id"] == pipeline_run


def test_failed_step_stops_the_pipeline_and_its_error_is_reported(fake_mlflow, tmp_path):
    steps = [{"id": "a", "entry_point": "train", "parameters": {"name": "a", "fail": True}},
             {"id": "b", "entry_point": "train", "parameters": {"name": "b"}}]
    path = write_pipeline(tmp_path / "p.yaml", steps)
    assert run_pipeline(PipelineOptions(str(path))) == 1
    assert [c["params"]["name"] for c in fake_mlflow()] == ["a"]
    report = report_of(tmp_path)
    a, b = report["steps"]
    assert report["status"] == "failed"
    assert a["status"] == "failed" and a["return_code"] == 3 and "RuntimeError: boom" in a["error_tail"]
    assert b["status"] == "skipped" and "stopped" in b["reason"]


def test_continue_on_error_runs_independent_steps_but_not_dependents(fake_mlflow, tmp_path):
    steps = [{"id": "a", "entry_point": "train", "parameters": {"name": "a", "fail": True}},
             {"id": "b", "entry_point": "train", "parameters": {"name": "b"}},
             {"id": "c", "entry_point": "plot", "needs": ["a"], "parameters": {"name": "c"}}]
    path = write_pipeline(tmp_path / "p.yaml", steps)
    assert run_pipeline(PipelineOptions(str(path), continue_on_error=True)) == 1
    assert [c["params"]["name"] for c in fake_mlflow()] == ["a", "b"]
    statuses = {s["id"]: s["status"] for s in report_of(tmp_path)["steps"]}
    assert statuses == {"a": "failed", "b": "succeeded", "c": "skipped"}


def test_step_selection_runs_only_the_named_steps_with_earlier_results(fake_mlflow, tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    run_pipeline(PipelineOptions(str(path)))
    assert run_pipeline(PipelineOptions(str(path), step=["plot"])) == 0
    calls = fake_mlflow()
    assert [c["entry_point"] for c in calls] == ["compare", "plot", "plot"]
    assert calls[-1]["params"]["parent_run_id"] == "run-compare"


def test_disabled_steps_are_skipped(fake_mlflow, tmp_path):
    steps = [{"id": "a", "entry_point": "train", "parameters": {"name": "a"}},
             {"id": "b", "entry_point": "train", "enabled": False, "parameters": {"name": "b"}}]
    run_pipeline(PipelineOptions(str(write_pipeline(tmp_path / "p.yaml", steps))))
    assert [c["params"]["name"] for c in fake_mlflow()] == ["a"]
    assert report_of(tmp_path)["steps"][1]["reason"] == "disabled"


def test_resume_reads_reports_written_before_the_local_folder_existed(fake_mlflow, tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    assert run_pipeline(PipelineOptions(str(path), step=["compare"])) == 0
    (tmp_path / "outputs").mkdir()  # where an earlier release wrote the reports
    (tmp_path / "mlproject-outputs" / "pipeline_runs").rename(tmp_path / "outputs" / "pipeline_runs")
    assert run_pipeline(PipelineOptions(str(path), resume=True)) == 0
    assert [c["entry_point"] for c in fake_mlflow()] == ["compare", "plot"]  # compare is not run again
    assert {s["id"]: s["status"] for s in report_of(tmp_path)["steps"]} == {"compare": "reused", "plot": "succeeded"}


def test_resume_skips_succeeded_steps_and_resumes_the_failed_sweep(fake_mlflow, tmp_path):
    steps = [{"id": "compare", "entry_point": "compare", "parameters": {"name": "compare"}},
             {"id": "ablation", "entry_point": "ablation",
              "parameters": {"name": "ablation", "fail_once": str(tmp_path / "failed-once")}},
             {"id": "plot", "entry_point": "plot", "needs": ["compare", "ablation"],
              "parameters": {"name": "plot", "parent_run_id": "{{ steps.compare.run_id }}"}}]
    path = write_pipeline(tmp_path / "p.yaml", steps)
    assert run_pipeline(PipelineOptions(str(path))) == 1
    assert run_pipeline(PipelineOptions(str(path), resume=True)) == 0
    calls = fake_mlflow()
    assert [c["entry_point"] for c in calls] == ["compare", "ablation", "ablation", "plot"]
    assert calls[2]["params"]["resume"] == "true"
    assert calls[3]["params"]["parent_run_id"] == "run-compare"
    assert {s["id"]: s["status"] for s in report_of(tmp_path)["steps"]} == \
           {"compare": "reused", "ablation": "succeeded", "plot": "succeeded"}


def test_reports_go_to_the_local_folder_or_under_mlflow_run_to_the_cache(tmp_path, monkeypatch):
    from mlproject.orchestration.config import PipelineSettings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLPROJECT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLPROJECT_LOCAL_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    settings = PipelineSettings(name="p")
    local, cache, legacy = settings.reports_dirs()
    assert local == Path("mlproject-outputs/pipeline_runs") and legacy == Path("outputs/pipeline_runs")
    assert cache.parent == tmp_path / "cache" / "pipeline_runs"  # one folder per project in the shared cache
    monkeypatch.setenv("MLFLOW_RUN_ID", "0" * 32)  # `mlflow run -e pipeline` works in the project: keep it clean
    assert settings.reports_dirs() == [cache, local, legacy]
    monkeypatch.setenv("MLPROJECT_LOCAL_DIR", str(tmp_path / "mine"))  # unless a local folder is named
    assert settings.reports_dirs()[0] == tmp_path / "mine" / "pipeline_runs"
    assert PipelineSettings(name="p", run_dir="reports").reports_dirs() == [Path("reports")]
    monkeypatch.delenv("MLPROJECT_LOCAL_DIR")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    assert settings.reports_dirs()[0] not in (cache, local)  # another project, another folder
