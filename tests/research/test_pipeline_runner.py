"""The pipeline runner: config validation, the shared step command, order, failures, resume.

Steps run a fake `mlflow` (first on PATH) that records its arguments and prints an
MLPROJECT_RESULT line, so these tests exercise the runner, not training.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from mlproject.errors import ConfigError, MlprojectError
from mlproject.orchestration.pipeline import (PipelineOptions, PipelineStep, load_pipeline, parse_step_result,
                                         run_pipeline, step_command)

FAKE_MLFLOW = textwrap.dedent('''\
    import json, os, sys
    args = sys.argv[1:]
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
                                            "status": "FINISHED"}))
''')


@pytest.fixture
def fake_mlflow(research_env, tmp_path, monkeypatch):
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
    (path,) = sorted(root.glob("outputs/pipeline_runs/*/report.json"))[-1:]
    return json.loads(path.read_text())


def test_step_command_is_an_mlflow_run_of_the_entry_point():
    step = PipelineStep(id="plot", entry_point="plot", parameters={"seeds": [1, 2], "fair_recipe": False,
                                                                   "parent_run_id": "{{ steps.cmp.run_id }}"},
                        experiment_name="exp")
    assert step_command(step, "/proj", {"cmp": {"run_id": "abc"}}) == [
        "mlflow", "run", "/proj", "-e", "plot", "--env-manager", "local", "--experiment-name", "exp",
        "-P", "seeds=1 2", "-P", "fair_recipe=false", "-P", "parent_run_id=abc"]


def test_step_command_adds_resume_only_to_sweep_steps():
    assert "resume=true" in step_command(PipelineStep(id="c", entry_point="compare"), resume=True)
    assert "resume=true" not in step_command(PipelineStep(id="p", entry_point="plot"), resume=True)


def test_step_command_without_the_upstream_result_is_an_error():
    step = PipelineStep(id="plot", entry_point="plot", parameters={"parent_run_id": "{{ steps.cmp.run_id }}"})
    with pytest.raises(MlprojectError, match="steps.cmp.run_id"):
        step_command(step, ".", {})


def test_parse_step_result_takes_the_last_result_line():
    out = 'x\nMLPROJECT_RESULT {"run_id": "a"}\nnoise\nMLPROJECT_RESULT {"run_id": "b"}\ntrailing log\n'
    assert parse_step_result(out) == {"run_id": "b"}
    assert parse_step_result("no result here") is None


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


def test_dry_run_prints_commands_in_dependency_order_and_runs_nothing(fake_mlflow, tmp_path, capsys):
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    assert run_pipeline(path, PipelineOptions(dry_run=True)) == 0
    out = capsys.readouterr().out
    assert out.index("-e compare") < out.index("-e plot")
    assert "parent_run_id=<steps.compare.run_id>" in out
    assert fake_mlflow() == []
    assert not (tmp_path / "outputs").exists()


def test_steps_run_in_dependency_order_passing_run_ids(fake_mlflow, tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    assert run_pipeline(path, PipelineOptions()) == 0
    calls = fake_mlflow()
    assert [c["entry_point"] for c in calls] == ["compare", "plot"]
    assert calls[0]["params"]["seeds"] == "42 43"
    assert calls[1]["params"]["parent_run_id"] == "run-compare"
    assert "--experiment-name" in calls[0]["args"]


def test_report_records_each_step(fake_mlflow, tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    run_pipeline(path, PipelineOptions())
    report = report_of(tmp_path)
    assert report["status"] == "succeeded"
    compare = next(s for s in report["steps"] if s["id"] == "compare")
    assert compare["status"] == "succeeded" and compare["run_id"] == "run-compare"
    assert compare["return_code"] == 0 and compare["command"][:2] == ["mlflow", "run"]
    assert compare["started_at"] and compare["ended_at"]


def test_report_is_logged_to_the_pipeline_run(fake_mlflow, tmp_path):
    from mlflow import MlflowClient

    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    run_pipeline(path, PipelineOptions())
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
    assert run_pipeline(path, PipelineOptions()) == 0
    run = client.get_run(pipeline_run)
    assert run.info.run_name == report_of(tmp_path)["pipeline"]
    note = run.data.tags["mlflow.note.content"]
    assert "| compare | compare | succeeded | `run-compare` |" in note
    assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.name"]


def test_steps_do_not_inherit_the_pipelines_own_mlflow_run(fake_mlflow, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment(f"pipe-{tmp_path.name}")
    pipeline_run = client.create_run(experiment_id).info.run_id  # as `mlflow run -e pipeline` would
    monkeypatch.setenv("MLFLOW_RUN_ID", pipeline_run)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    assert run_pipeline(path, PipelineOptions()) == 0
    assert [c["mlflow_run_id"] for c in fake_mlflow()] == [None, None]
    assert report_of(tmp_path)["pipeline_run_id"] == pipeline_run


def test_failed_step_stops_the_pipeline_and_its_error_is_reported(fake_mlflow, tmp_path):
    steps = [{"id": "a", "entry_point": "train", "parameters": {"name": "a", "fail": True}},
             {"id": "b", "entry_point": "train", "parameters": {"name": "b"}}]
    path = write_pipeline(tmp_path / "p.yaml", steps)
    assert run_pipeline(path, PipelineOptions()) == 1
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
    assert run_pipeline(path, PipelineOptions(continue_on_error=True)) == 1
    assert [c["params"]["name"] for c in fake_mlflow()] == ["a", "b"]
    statuses = {s["id"]: s["status"] for s in report_of(tmp_path)["steps"]}
    assert statuses == {"a": "failed", "b": "succeeded", "c": "skipped"}


def test_step_selection_runs_only_the_named_steps_with_earlier_results(fake_mlflow, tmp_path):
    path = write_pipeline(tmp_path / "p.yaml", STEPS)
    run_pipeline(path, PipelineOptions())
    assert run_pipeline(path, PipelineOptions(step=["plot"])) == 0
    calls = fake_mlflow()
    assert [c["entry_point"] for c in calls] == ["compare", "plot", "plot"]
    assert calls[-1]["params"]["parent_run_id"] == "run-compare"


def test_disabled_steps_are_skipped(fake_mlflow, tmp_path):
    steps = [{"id": "a", "entry_point": "train", "parameters": {"name": "a"}},
             {"id": "b", "entry_point": "train", "enabled": False, "parameters": {"name": "b"}}]
    run_pipeline(write_pipeline(tmp_path / "p.yaml", steps), PipelineOptions())
    assert [c["params"]["name"] for c in fake_mlflow()] == ["a"]
    assert report_of(tmp_path)["steps"][1]["reason"] == "disabled"


def test_resume_skips_succeeded_steps_and_resumes_the_failed_sweep(fake_mlflow, tmp_path):
    steps = [{"id": "compare", "entry_point": "compare", "parameters": {"name": "compare"}},
             {"id": "ablation", "entry_point": "ablation",
              "parameters": {"name": "ablation", "fail_once": str(tmp_path / "failed-once")}},
             {"id": "plot", "entry_point": "plot", "needs": ["compare", "ablation"],
              "parameters": {"name": "plot", "parent_run_id": "{{ steps.compare.run_id }}"}}]
    path = write_pipeline(tmp_path / "p.yaml", steps)
    assert run_pipeline(path, PipelineOptions()) == 1
    assert run_pipeline(path, PipelineOptions(resume=True)) == 0
    calls = fake_mlflow()
    assert [c["entry_point"] for c in calls] == ["compare", "ablation", "ablation", "plot"]
    assert calls[2]["params"]["resume"] == "true"
    assert calls[3]["params"]["parent_run_id"] == "run-compare"
    assert {s["id"]: s["status"] for s in report_of(tmp_path)["steps"]} == \
           {"compare": "reused", "ablation": "succeeded", "plot": "succeeded"}
