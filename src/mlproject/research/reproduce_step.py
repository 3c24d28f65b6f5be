"""`mlproject reproduce --run-id ID`: re-run a run from its record and say whether its numbers held.

1. The run's config: its `config/resolved.yaml`, or for a run without one its params.
2. Its record (`app.record`, logged by `tracking.record`) against this machine: every
   difference printed; a changed token cache or tokenizer refuses (`--allow-data-change`).
   A run made before records existed lists what cannot be checked.
3. Training into a new run tagged `mlproject.reproduces=ID`: with the installed code, or with
   `--source record` from the recorded commit and patch in a temporary git worktree (a
   `python -m mlproject train` subprocess with that worktree first on PYTHONPATH).
4. A verdict per metric history (`reproduce.judge_histories`), the report and an overlay
   plot logged on the new run, both runs' descriptions linked. The exit code is 1 when the
   verdict is `differs`, so a scheduler can gate on it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlproject.app.config import RunConfig
from mlproject.app.record import RunRecord, capture_record
from mlproject.app.record.diff import Difference, data_changed, diff_record
from mlproject.config import build_sections, dump_yaml
from mlproject.errors import MlprojectError
from mlproject.protocol import hand_run_to, result_line
from mlproject.research.config import ReproduceConfig
from mlproject.schema import Artifact, RunRole, RunStatus, Tag
from mlproject.research.reproduce import (TIMING_METRICS, MetricVerdict, Verdict, judge_histories, overall_verdict,
                                          overlay_plot)



@dataclass
class Reproduction:
    """The outcome of `run_reproduce`."""

    original_run_id: str
    run_id: str
    verdict: Verdict
    verdicts: list[MetricVerdict]
    differences: list[Difference]
    report: str

    @property
    def exit_code(self) -> int:
        return 1 if self.verdict is Verdict.DIFFERS else 0


def _parse_param(text: str) -> Any:
    """A param's value as logged (`str(value)`): None, bools, numbers and lists come back typed."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def original_config(run: Any) -> tuple[RunConfig, str]:
    """(the run's resolved config, where it came from): `config/resolved.yaml`, else its params."""
    import yaml

    from mlproject.tracking import client

    text = client.load_text(run.run_id, Artifact.RESOLVED_CONFIG)
    if text is not None:
        data, where = yaml.safe_load(text) or {}, Artifact.RESOLVED_CONFIG
    else:
        data, where = {}, "params"
        for key, value in run.params.items():
            section, _, name = key.partition(".")
            # `runtime.*` params are what the trainer measured (runtime.world_size), not the
            # runtime section, whose fields are logged under their earlier names (train.device)
            if section in RunConfig.SECTIONS and section != "runtime" and name and "." not in name:
                data.setdefault(section, {})[name] = _parse_param(value)
        if not data:
            raise MlprojectError(f"run {run.run_id} has neither {Artifact.RESOLVED_CONFIG} nor model/data/train params: "
                                 "it is not a training run")
    return RunConfig(**build_sections(RunConfig.SECTIONS, yaml_path=f"run {run.run_id}: {where}", data=data)), where


def reproduction_config(cfg: RunConfig, run: Any, opts: ReproduceConfig, experiment: str) -> RunConfig:
    """The original's config as a fresh run in its experiment: named after it, not resumed,
    registering nothing."""
    tracking = {"run_name": f"reproduce-{run.run_name or run.run_id[:8]}", "experiment_name": experiment,
                "resume_from": None, "register_as": None}
    runtime = {"num_threads": opts.num_threads} if opts.num_threads is not None else {}
    if opts.max_steps is not None:
        runtime["stop_at_step"] = opts.max_steps
    return cfg.replace(tracking=tracking, runtime=runtime)


def check_record(run: Any, cfg: RunConfig, opts: ReproduceConfig) -> tuple[RunRecord, list[Difference]]:
    """The run's record and its differences from this machine; refuses a changed data digest."""
    from mlproject.data.prepare import prepare_data
    from mlproject.tracking.record import load_record

    tags = dict(run.tags)
    # A run made before records still logged its data digests as params (`dataset.*`).
    for tag, param in ((Tag.DATA_DIGEST, "dataset.digest"), (Tag.DATA_TOKENIZER_HASH, "dataset.tokenizer_hash")):
        if tag not in tags and param in run.params:
            tags[tag] = run.params[param]
    recorded = load_record(run.run_id, tags)
    info = prepare_data(cfg.data, cfg.runtime, log=lambda line: None).info
    current = capture_record(digest=str(info["digest"]), tokenizer_hash=str(info["tokenizer_hash"]))
    differences = diff_record(recorded, current)
    if data_changed(differences) and not opts.allow_data_change:
        changed = "; ".join(d.describe() for d in differences if d.checked and d.item in ("data digest", "tokenizer"))
        raise MlprojectError(f"the data of run {run.run_id} changed ({changed}): its numbers cannot come back; "
                             "pass --allow-data-change to reproduce it anyway")
    return recorded, differences


def _train_installed(cfg: RunConfig, run_id: str) -> str:
    from mlproject.tracking.train_tracker import train_tracked

    return train_tracked(cfg, run_id=run_id).status


def _train_from_record(cfg: RunConfig, run_id: str, record: RunRecord) -> str:
    """Train in a subprocess whose `mlproject` is the recorded source; returns the run's status."""
    from mlproject.app.record.materialise import import_root, materialised_source
    from mlproject.tracking.queries import get_run

    with materialised_source(record.source) as root, tempfile.TemporaryDirectory(prefix="mlproject-repro-") as tmp:
        config = Path(tmp) / "config.yaml"
        # in the layout of earlier releases: the recorded source may be one (today's reads it too)
        config.write_text(dump_yaml(cfg.legacy_sections()), encoding="utf-8")
        assert record.source is not None  # materialised_source refused otherwise
        env = hand_run_to(os.environ, run_id)
        paths = [str(import_root(root, record.source)), os.environ.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        print(f"reproduce: training from the recorded source at commit {record.source.commit}", flush=True)
        subprocess.run([sys.executable, "-m", "mlproject", "train", "--config", str(config)], env=env, check=False)
    return get_run(run_id).status


def _histories(run_id: str, metrics: list[str]) -> dict[str, list[tuple[int, float]]]:
    from mlproject.tracking.queries import metric_history

    return {key: metric_history(run_id, key) for key in metrics}


def judged_metrics(run: Any) -> list[str]:
    """The metrics a verdict compares: all the run logged but timings and system metrics."""
    return sorted(m for m in run.metrics if m not in TIMING_METRICS and not m.startswith("system/"))


def report_text(original_id: str, run_id: str, where: str, source: str, differences: list[Difference],
                verdict: Verdict, verdicts: list[MetricVerdict]) -> str:
    lines = [f"reproduce: run {original_id} -> run {run_id} (config from {where}, {source} source)",
             f"verdict: {verdict.value}"]
    lines += [f"  {v.describe()}" for v in verdicts]
    checked = [d for d in differences if d.checked]
    unchecked = [d for d in differences if not d.checked]
    lines.append(f"record differences ({len(checked)})" + (":" if checked else ": none"))
    lines += [f"  {d.describe()}" for d in checked]
    if unchecked:
        lines.append(f"unchecked ({len(unchecked)}):")
        lines += [f"  {d.describe()}" for d in unchecked]
    return "\n".join(lines)


def _log_report(original: Any, run_id: str, report: str, verdict: Verdict,
                histories: tuple[dict, dict]) -> None:
    """The report and overlay plot on the new run; both runs' descriptions link each other."""
    from mlproject.tracking import client

    client.log_text(run_id, report, Artifact.REPRODUCE_REPORT)
    if histories[0]:
        with tempfile.TemporaryDirectory(prefix="mlproject-repro-") as tmp:
            folder, name = Artifact.REPRODUCE_OVERLAY.rsplit("/", 1)
            plot = overlay_plot(*histories, Path(tmp) / name, title=f"run {original.run_id} reproduced")
            client.log_files(run_id, [plot], folder)
    client.set_tags(run_id, {Tag.REPRODUCE_VERDICT: verdict.value})
    client.describe_run(run_id, note=f"Reproduces run {original.run_id} ({original.run_name}): "
                                     f"**{verdict.value}**. See `{Artifact.REPRODUCE_REPORT}`.")
    note = original.tags.get(Tag.NOTE, "")
    line = f"Reproduced by run {run_id}: **{verdict.value}**."
    client.set_tags(original.run_id, {Tag.REPRODUCED_BY: run_id})
    client.describe_run(original.run_id, note=f"{note}\n\n{line}" if note else line)


def reproduce_run(original: Any, opts: ReproduceConfig, *, parent_run_id: str | None = None) -> Reproduction:
    """Reproduce one training run into a new run (nested under `parent_run_id` when given)."""
    from mlproject.tracking import client
    from mlproject.tracking.queries import experiment_name

    cfg, where = original_config(original)
    cfg = reproduction_config(cfg, original, opts, experiment_name(original.experiment_id))
    record, differences = check_record(original, cfg, opts)
    for d in differences:
        print(f"reproduce: {d.describe()}", flush=True)
    nested = {Tag.PARENT: parent_run_id} if parent_run_id else {}
    run_id, _ = client.open_run(experiment=cfg.tracking.experiment_name, run_name=cfg.tracking.run_name or "reproduce",
                                tags={Tag.REPRODUCES: original.run_id, **nested})
    status = (_train_from_record(cfg, run_id, record) if opts.source == "record"
              else _train_installed(cfg, run_id))
    if status != RunStatus.FINISHED:
        raise MlprojectError(f"the reproduction run {run_id} ended {status}; no verdict")
    metrics = judged_metrics(original)
    histories = (_histories(original.run_id, metrics), _histories(run_id, metrics))
    verdicts = judge_histories(*histories, rtol=opts.rtol, max_step=opts.max_steps)
    verdict = overall_verdict(verdicts)
    report = report_text(original.run_id, run_id, where, opts.source, differences, verdict, verdicts)
    print(report, flush=True)
    _log_report(original, run_id, report, verdict, histories)
    return Reproduction(original.run_id, run_id, verdict, verdicts, differences, report)


def run_reproduce(opts: ReproduceConfig) -> int:
    """Reproduce run `opts.run_id` (a training run or a sweep parent); print and log the report.
    Returns the exit code: 1 when the numbers did not come back."""
    from mlproject.research.reproduce_sweep import reproduce_sweep
    from mlproject.tracking.queries import get_run

    opts.validate()
    original = get_run(str(opts.run_id))
    role = original.tags.get(Tag.ROLE)
    if role == "tune_parent":
        raise MlprojectError(f"run {original.run_id} is a tune parent; reproduce its best trial's run instead")
    if role == RunRole.SWEEP_PARENT:
        outcome = reproduce_sweep(original, opts)
        verdict, run_id, code = outcome.verdict_text, outcome.run_id, outcome.exit_code
    else:
        repro = reproduce_run(original, opts)
        verdict, run_id, code = repro.verdict.value, repro.run_id, repro.exit_code
    print(result_line({"step": "reproduce", "run_id": run_id, "reproduces": original.run_id,
                       "verdict": verdict}), flush=True)
    return code
