"""Reliability of tracked runs: finished results are never overwritten, bad input leaves no run,
a hard kill loses no metric point, a new SQLite store survives concurrent first users, and the
failures a user can cause end in one line."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow import MlflowClient

from helpers import VENV_BIN
from mlproject.errors import MlprojectError
from mlproject.schema import Tag
from mlproject.tracking.train_tracker import train_tracked


def _runs(experiment_name: str) -> list:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _artifact_file(run_id: str, path: str) -> Path:
    return Path(urlparse(MlflowClient().get_run(run_id).info.artifact_uri).path) / path


def _cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "mlproject"), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0, done.stdout[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("mlproject: error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


# ----------------------------------------------------------------------------- item 4: finished stays finished

@pytest.fixture
def finished(tiny_config):
    """A FINISHED run of the tiny model and its config."""
    cfg = tiny_config()
    outcome = train_tracked(cfg)
    assert outcome.status == "FINISHED"
    return cfg, outcome


def _resume(cfg, run_id, **model):
    return replace(cfg, model=replace(cfg.model, **model), tracking=replace(cfg.tracking, resume_from=run_id))


@pytest.mark.e2e
def test_a_resume_from_a_corrupt_checkpoint_leaves_the_finished_run_untouched(finished):
    cfg, outcome = finished
    before = MlflowClient().get_run(outcome.run_id)
    _artifact_file(outcome.run_id, "checkpoints/last.pt").write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(MlprojectError, match="unreadable"):
        train_tracked(_resume(cfg, outcome.run_id))
    after = MlflowClient().get_run(outcome.run_id)
    assert after.info.status == "FINISHED"
    assert after.info.end_time == before.info.end_time
    assert Tag.ERROR not in after.data.tags


def test_a_resume_with_a_contradicting_n_layer_leaves_the_finished_run_untouched(finished):
    cfg, outcome = finished
    with pytest.raises(MlprojectError, match="the model differs"):
        train_tracked(_resume(cfg, outcome.run_id, n_layer=3))
    after = MlflowClient().get_run(outcome.run_id)
    assert after.info.status == "FINISHED" and Tag.ERROR not in after.data.tags


def test_a_resumed_run_that_finishes_drops_the_error_of_an_earlier_attempt(finished):
    cfg, outcome = finished
    MlflowClient().set_tag(outcome.run_id, Tag.ERROR, "RuntimeError: an earlier session died")
    assert train_tracked(_resume(cfg, outcome.run_id)).status == "FINISHED"
    assert Tag.ERROR not in MlflowClient().get_run(outcome.run_id).data.tags


# ----------------------------------------------------------------------------- item 8: resume details

def test_resuming_at_the_final_step_reports_the_last_training_loss(finished, capsys):
    cfg, outcome = finished
    capsys.readouterr()
    again = train_tracked(_resume(cfg, outcome.run_id))
    out = capsys.readouterr().out
    assert "train_loss nan" not in out
    assert again.summary["train_loss_last"] == pytest.approx(outcome.summary["train_loss_last"])
    client = MlflowClient()
    assert client.get_run(outcome.run_id).data.metrics["train_loss_last"] == pytest.approx(
        outcome.summary["train_loss_last"])
    # nothing was logged twice at the final step
    assert len(client.get_metric_history(outcome.run_id, "val_loss_best")) == 1


@pytest.mark.e2e
def test_a_run_stopped_off_the_log_interval_and_resumed_logs_the_uninterrupted_curve(tiny_config):
    """Stopped at step 3 (logs every 2), resumed by id: every point of the uninterrupted run's
    train_loss and val_loss curves is in the resumed run, equal; the only extra point is the
    stopped session's own last one, at step 3. Dropout on: the RNG streams must match too."""
    client = MlflowClient()
    short = {"max_steps": 8, "save_every": 0}
    reference = train_tracked(tiny_config(model={"dropout": 0.1}, train=short))
    cfg = tiny_config(model={"dropout": 0.1}, train=short, runtime={"stop_at_step": 3})
    stopped = train_tracked(cfg)
    resumed = train_tracked(cfg.replace(runtime={"stop_at_step": None}, tracking={"resume_from": stopped.run_id}))
    assert resumed.run_id == stopped.run_id and resumed.status == "FINISHED"
    for key in ("train_loss", "val_loss"):
        expected = {m.step: m.value for m in client.get_metric_history(reference.run_id, key)}
        got = {m.step: m.value for m in client.get_metric_history(stopped.run_id, key)}
        assert set(got) - set(expected) == {3}, key
        assert {step: got[step] for step in expected} == expected, key


@pytest.mark.e2e
def test_sigkill_then_resume_leaves_every_step_logged_exactly_once(tiny_yaml, experiment_name):
    """SIGKILL (no handler runs, buffered metrics are lost) after a checkpoint, then --resume-from
    once the killed process's lease timed out (2 s here)."""
    steps = 60
    config = tiny_yaml(train={"max_steps": steps, "log_interval": 1, "save_every": 7, "eval_interval": 30},
                       tracking={"lease_heartbeat": 0.5, "lease_timeout": 2})
    proc = subprocess.Popen([str(VENV_BIN / "mlproject"), "train", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("step 31/"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    (run,) = _runs(experiment_name)
    assert run.info.status == "RUNNING"  # nothing got to close it
    time.sleep(2.5)
    done = _cli("train", "--config", str(config), "--resume-from", run.info.run_id)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    client = MlflowClient()
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    for key in ("train_loss", "lr", "tokens_seen"):
        logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert logged == list(range(1, steps + 1)), key


# ----------------------------------------------------------------------------- item 7: no stray runs

@pytest.mark.e2e
@pytest.mark.parametrize("flags, expected", [
    (["--dataset", "no-such-corpus"], "unknown dataset 'no-such-corpus'"),
    (["--block-size", "100000"], "block_size+1=100001"),
    (["--seed", "-1"], "seed=-1 must be >= 0"),
])
def test_a_train_that_cannot_start_creates_no_run(tiny_yaml, experiment_name, flags, expected):
    line = _one_line_error(_cli("train", "--config", str(tiny_yaml()), *flags))
    assert expected in line
    assert _runs(experiment_name) == []


@pytest.mark.e2e
@pytest.mark.parametrize("flags, expected", [
    (["--seeds", "-1"], "seed -1 must be >= 0"),
    (["--models", "gpt2", "gpt3", "--block-size", "100000"], "compare child gpt2-s1"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
])
def test_a_compare_that_cannot_start_creates_no_run(tiny_yaml, experiment_name, flags, expected):
    args = ["compare", "--config", str(tiny_yaml()), "--models", "gpt2", "--seeds", "1", *flags]
    line = _one_line_error(_cli(*args))
    assert expected in line
    assert "--resume" not in line
    assert _runs(experiment_name) == []


# ----------------------------------------------------------------------------- item 3: SQLite first use

@pytest.mark.e2e
def test_four_concurrent_first_users_of_a_new_sqlite_store_all_finish(tiny_yaml, experiment_name, tmp_path):
    uri = f"sqlite:///{tmp_path}/fresh.db"
    config = tiny_yaml(train={"max_steps": 4, "eval_interval": 4, "save_every": 4})
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [subprocess.Popen([str(VENV_BIN / "mlproject"), "train", "--config", str(config)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(o[-1500:] for o in outputs)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment_name).experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4


@pytest.mark.e2e
def test_a_half_migrated_sqlite_store_is_a_one_line_error_saying_how_to_recover(tiny_yaml, tmp_path):
    db = tmp_path / "broken.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    with sqlite3.connect(db) as conn:  # what an interrupted alembic batch migration leaves behind
        conn.execute("CREATE TABLE _alembic_tmp_params (key VARCHAR(250), value VARCHAR(8000))")
    line = _one_line_error(_cli("train", "--config", str(tiny_yaml()), env={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"}))
    assert "half-migrated" in line and "_alembic_tmp_params" in line and f"move {db} aside" in line


# ----------------------------------------------------------------------------- item 6: one-line errors

@pytest.mark.e2e
def test_an_unreachable_tracking_server_is_one_line_naming_the_uri(tiny_yaml, experiment_name):
    with socket_port() as port:
        uri = f"http://alice:secret123@127.0.0.1:{port}"
        start = time.monotonic()
        done = _cli("train", "--config", str(tiny_yaml()), env={"MLFLOW_TRACKING_URI": uri}, timeout=120)
    line = _one_line_error(done)
    print(f"unreachable server reported after {time.monotonic() - start:.1f} s")
    assert f"http://***@127.0.0.1:{port} is not reachable" in line
    assert "secret123" not in done.stdout + done.stderr


class socket_port:
    """A loopback port that nothing listens on while the block runs."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


@pytest.mark.e2e
def test_a_checkpoint_write_that_fails_for_lack_of_space_is_one_line(tiny_yaml, tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse the checkpoint's bytes, as a full disk does."""
    config = tiny_yaml(tracking={"log_to_mlflow": False, "run_name": "full", "output_dir": str(tmp_path / "out")})
    prepare = _cli("train", "--config", str(config), "--max-steps", "1", "--save-every", "0",
                   "--output-dir", str(tmp_path / "warm"))  # builds the token cache without the limit
    assert prepare.returncode == 0, prepare.stderr[-2000:]

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    done = subprocess.run([str(VENV_BIN / "mlproject"), "train", "--config", str(config)], capture_output=True,
                          text=True, timeout=300, env=os.environ.copy(), preexec_fn=limit)
    line = _one_line_error(done)
    assert "could not write checkpoint" in line and "no checkpoint was written" in line
    assert not list((tmp_path / "out" / "full" / "checkpoints").glob("*.pt"))
    assert not list((tmp_path / "out" / "full" / "checkpoints").glob(".*.tmp"))  # no half-written file left


def test_a_non_utf8_config_file_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  max_steps: 10  # r\xe9sum\xe9\n".encode("latin-1"))
    line = _one_line_error(_cli("train", "--config", str(path)))
    assert "not UTF-8" in line and str(path) in line


def test_a_negative_learning_rate_in_exponent_form_names_the_field(tiny_yaml):
    line = _one_line_error(_cli("train", "--config", str(tiny_yaml()), "--learning-rate", "-1e-3"))
    assert "learning_rate=-0.001 must be positive" in line


def test_import_hf_of_weights_the_weights_only_loader_refuses_is_one_line(tmp_path):
    import torch
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=32).save_pretrained(tmp_path)
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"transformer.wte.weight": Payload()}, tmp_path / "pytorch_model.bin")
    line = _one_line_error(_cli("import-hf", "--model-dir", str(tmp_path), "--output", str(tmp_path / "out.pt")))
    assert "refused by the weights-only loader" in line
    assert not marker.exists()
