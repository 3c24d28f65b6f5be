"""Real processes: SIGKILL after a checkpoint then resume reaches the uninterrupted run's
losses exactly; SIGTERM ends a run with a checkpoint and status "interrupted"."""

from __future__ import annotations

import signal
import subprocess

import pytest

from mlproject.model.checkpoint import load_checkpoint

TRAIN = dict(batch_size=4, max_steps=12, eval_interval=4, eval_batches=2, log_interval=2, save_every=4,
             warmup_steps=2, device="cpu", precision="fp32", num_threads=1, progress="lines", peak_flops=1e11, seed=3)


def wait_for(proc: subprocess.Popen, marker: str) -> list[str]:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(marker):
            return lines
    raise AssertionError(f"child ended (rc={proc.wait()}) before {marker!r}:\n{''.join(lines)}")


@pytest.mark.e2e
def test_sigkill_after_a_checkpoint_then_resume_matches_an_uninterrupted_run(data, cache_dir, tmp_path, start_child,
                                                                             child_result):
    base = {"cache_dir": str(cache_dir), "train": TRAIN, "model": {"dropout": 0.1}}  # dropout: RNG state matters
    reference = start_child({**base, "checkpoint_dir": str(tmp_path / "ref")})
    victim = start_child({**base, "checkpoint_dir": str(tmp_path / "run"), "block_at_checkpoint": 8})
    wait_for(victim, "CHECKPOINT 8")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 8

    resumed = child_result(start_child({**base, "checkpoint_dir": str(tmp_path / "run"),
                                        "resume_from": str(tmp_path / "run" / "last.pt")}))
    expected = child_result(reference)
    assert resumed["status"] == expected["status"] == "finished" and resumed["step"] == 12
    for key in ("train_loss_last", "val_loss_best"):
        assert resumed["summary"][key] == pytest.approx(expected["summary"][key], abs=1e-6)
    assert resumed["val"]["12"] == pytest.approx(expected["val"]["12"], abs=1e-6)
    assert resumed["summary"]["tokens_seen"] == expected["summary"]["tokens_seen"]


@pytest.mark.e2e
def test_sigterm_writes_a_checkpoint_and_returns_interrupted(data, cache_dir, tmp_path, start_child, child_result):
    spec = {"cache_dir": str(cache_dir), "checkpoint_dir": str(tmp_path),
            "train": {**TRAIN, "max_steps": 100_000, "eval_interval": 100_000, "save_every": 0, "log_interval": 1},
            "marker_at_log": 3}
    proc = start_child(spec)
    wait_for(proc, "LOGGED 3")
    proc.send_signal(signal.SIGTERM)
    result = child_result(proc)
    assert result["status"] == "interrupted" and 3 <= result["step"] < 100_000
    assert result["events"][-2:] == [f"checkpoint:last:{result['step']}", "end:interrupted"]
    assert load_checkpoint(tmp_path / "last.pt")["step"] == result["step"]
