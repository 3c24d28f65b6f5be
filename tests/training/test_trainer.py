"""The training loop in-process: callbacks, schedule length, eval, best/last checkpoints,
early stopping, gradient accumulation, interruption and exact resumption."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mlproject.errors import ConfigError, MlprojectError
from mlproject.model.checkpoint import load_checkpoint, save_model_checkpoint
from mlproject.model.config import GPTConfig
from mlproject.training import evaluation
from mlproject.config import replace
from mlproject.training.config import RuntimeConfig, TrainConfig
from mlproject.training.evaluation import eval_windows
from mlproject.training.resolve import resolve
from mlproject.training.trainer import TrainerCallback, train

LOG_KEYS = {"train_loss", "lr", "grad_norm", "tokens_per_sec", "ms_per_step", "mfu", "data_time_share",
            "peak_mem_mb", "tokens_seen", "epoch"}
START_KEYS = {"params_total", "params_non_embedding", "flops_per_token", "total_steps", "steps_per_epoch",
              "start_step", "device", "world_size", "precision", "peak_flops", "peak_flops_source", "warmup_steps",
              "tokens_per_step"}
SUMMARY_KEYS = {"val_loss_best", "val_ppl_best", "val_bpb_best", "train_loss_last", "tokens_seen", "flops", "elapsed_sec",
                "params_total", "tokens_per_sec", "peak_mem_mb"}


class Recorder(TrainerCallback):
    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.start: dict = {}
        self.logs: dict[int, dict[str, float]] = {}
        self.evals: dict[int, dict[str, float]] = {}
        self.result = None

    def on_train_start(self, info):
        self.start = info
        self.events.append(("start",))

    def on_log(self, step, metrics):
        self.logs[step] = metrics
        self.events.append(("log", step))

    def on_eval(self, step, metrics):
        self.evals[step] = metrics
        self.events.append(("eval", step))

    def on_checkpoint(self, path, kind, step):
        assert Path(path).is_file()
        self.events.append(("checkpoint", kind, step))

    def on_train_end(self, result):
        self.result = result
        self.events.append(("end", result.status))


def tcfg(**overrides) -> TrainConfig:
    base = dict(batch_size=4, max_steps=8, eval_interval=4, eval_batches=2, log_interval=2, save_every=4,
                warmup_steps=2, precision="fp32")
    return TrainConfig(**{**base, **overrides})


RUNTIME = RuntimeConfig(device="cpu", num_threads=1, progress="lines", peak_flops=1e11)


def resolved_train(model_cfg: GPTConfig, data, cfg: TrainConfig, runtime: RuntimeConfig = RUNTIME, **kwargs):
    """`train()` on the configs as the application resolves them for `data`'s tokenizer."""
    model_cfg, cfg = resolve(model_cfg, cfg, data.vocab_size)
    return train(model_cfg, data, cfg, runtime=runtime, **kwargs)


def synthetic_data(train_windows: int, val_windows: int = 8, block_size: int = 32, vocab_size: int = 100):
    """A PreparedData stand-in: random tokens, exactly `train_windows` windows of block_size + 1."""
    rng = np.random.default_rng(0)
    split = lambda n: SimpleNamespace(tokens=rng.integers(0, vocab_size, n * block_size + 1).astype(np.uint16))
    return SimpleNamespace(train=split(train_windows), val=split(val_windows), vocab_size=vocab_size)


def test_train_calls_back_in_order_with_the_documented_keys(data, model_cfg, tmp_path):
    rec = Recorder()
    result = resolved_train(model_cfg, data, tcfg(), checkpoint_dir=tmp_path, callbacks=[rec])
    assert START_KEYS <= set(rec.start)
    assert not {"model_config", "train_config"} & set(rec.start)  # the caller's, resolved before train()
    assert rec.events == [("start",), ("log", 2), ("log", 4), ("eval", 4), ("checkpoint", "best", 4),
                          ("checkpoint", "last", 4), ("log", 6), ("log", 8), ("eval", 8),
                          ("checkpoint", "best", 8), ("checkpoint", "last", 8), ("end", "finished")]
    assert all(set(m) == LOG_KEYS for m in rec.logs.values())
    assert set(rec.evals[8]) == {"val_loss", "val_ppl", "val_token_acc", "val_bpb"}
    best = min(rec.evals.values(), key=lambda m: m["val_loss"])
    assert result.summary["val_bpb_best"] == best["val_bpb"]
    assert rec.evals[8]["val_ppl"] == pytest.approx(math.exp(rec.evals[8]["val_loss"]))
    assert result.status == "finished" and result.step == 8 and rec.result is result
    assert set(result.summary) == SUMMARY_KEYS
    assert result.summary["tokens_seen"] == 8 * 4 * 32
    assert result.summary["flops"] == rec.start["flops_per_token"] * 8 * 4 * 32  # what a ladder fits against
    assert result.last_checkpoint == tmp_path / "last.pt" and result.best_checkpoint == tmp_path / "best.pt"


def test_training_learns_below_the_uniform_guess(data, model_cfg, tmp_path):
    result = resolved_train(model_cfg, data, tcfg(max_steps=30, eval_interval=30, batch_size=8, learning_rate=3e-3),
                            checkpoint_dir=tmp_path)
    assert result.summary["val_loss_best"] < math.log(data.vocab_size) - 0.5


def test_the_resolved_configs_are_the_ones_trained(data, model_cfg, tmp_path):
    model, cfg = resolve(model_cfg, tcfg(max_steps=2, recipe="gpt3"), data.vocab_size)
    assert model.vocab_size == 512 and model.n_layer == 2
    assert (cfg.beta2, cfg.weight_decay, cfg.data_seed) == (0.95, 0.1, 42)
    train(model, data, cfg, runtime=RUNTIME, checkpoint_dir=tmp_path)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["model_config"] == dataclasses.asdict(model) and state["train_config"] == dataclasses.asdict(cfg)


def test_unresolved_configs_are_refused_before_anything_is_built(data, model_cfg, tmp_path):
    with pytest.raises(ConfigError, match="resolved model config"):
        train(model_cfg, data, tcfg(), checkpoint_dir=tmp_path)
    model, _ = resolve(model_cfg, tcfg(), data.vocab_size)
    with pytest.raises(ConfigError, match="resolved training config"):
        train(model, data, tcfg(), checkpoint_dir=tmp_path)  # data_seed and the recipe's betas unset
    assert list(tmp_path.iterdir()) == []


def test_vocab_is_padded_to_a_multiple_of_64(model_cfg, tmp_path):
    data = synthetic_data(16)
    model, cfg = resolve(model_cfg, tcfg(max_steps=1), data.vocab_size)
    assert model.vocab_size == 128
    train(model, data, cfg, runtime=RUNTIME, checkpoint_dir=tmp_path)
    assert load_checkpoint(tmp_path / "last.pt")["model_config"]["vocab_size"] == 128


def test_total_steps_is_the_smaller_of_epochs_and_max_steps(model_cfg, tmp_path):
    data = synthetic_data(train_windows=40)  # batch 8: 5 steps per epoch
    rec = Recorder()
    result = resolved_train(model_cfg, data, tcfg(batch_size=8, epochs=2, max_steps=None), checkpoint_dir=tmp_path,
                            callbacks=[rec])
    assert (rec.start["steps_per_epoch"], rec.start["total_steps"], result.step) == (5, 10, 10)
    assert rec.logs[10]["epoch"] == pytest.approx(2.0)
    result = resolved_train(model_cfg, data, tcfg(batch_size=8, epochs=2, max_steps=7), checkpoint_dir=tmp_path)
    assert result.step == 7


def test_too_little_data_for_one_step_is_an_error(model_cfg, tmp_path):
    with pytest.raises(MlprojectError, match="grad_accum_steps=4"):
        resolved_train(model_cfg, synthetic_data(train_windows=8), tcfg(batch_size=4, grad_accum_steps=4),
                       checkpoint_dir=tmp_path)


def test_eval_windows_are_fixed_consecutive_and_zero_means_all():
    assert eval_windows(10 * 32 + 1, 32, 2, 2).tolist() == [0, 32, 64, 96]
    assert len(eval_windows(10 * 32 + 1, 32, 2, 0)) == 10
    assert len(eval_windows(10 * 32 + 1, 32, 2, 2, world_size=2)) == 8  # per process: as one with 2x batch
    assert len(eval_windows(10 * 32, 32, 2, 0)) == 9  # the last window lacks its final target


def test_best_checkpoint_follows_the_lowest_val_loss_and_early_stopping(data, model_cfg, tmp_path, monkeypatch):
    scripted = iter([3.0, 2.0, 2.5, 2.4, 2.1, 1.0])

    def fake_evaluate(*args, **kwargs):
        loss = next(scripted)
        return {"val_loss": loss, "val_ppl": math.exp(loss), "val_token_acc": 0.0}

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    rec = Recorder()
    result = resolved_train(model_cfg, data, tcfg(max_steps=20, eval_interval=2, save_every=0,
                                                  early_stopping_patience=3), checkpoint_dir=tmp_path, callbacks=[rec])
    assert result.status == "early_stopped" and result.step == 10  # evals at 2,4 (best), 6, 8, 10 (3 worse)
    assert [e for e in rec.events if e[0] == "checkpoint"] == [("checkpoint", "best", 2), ("checkpoint", "best", 4),
                                                                ("checkpoint", "last", 10)]
    assert result.summary["val_loss_best"] == 2.0
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 4
    assert rec.events[-1] == ("end", "early_stopped")


class StopAt(Recorder):
    """Asks to stop once the evaluation at `step` is done (a pruner's way), and at every
    evaluation from then on, the last one included."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step, self.seen = step, 0

    def on_eval(self, step, metrics):
        super().on_eval(step, metrics)
        self.seen = step

    def should_stop(self):
        return self.seen >= self.step


def test_a_callback_stops_the_run_after_an_evaluation_with_its_summary_but_never_at_the_last_step(
        data, model_cfg, tmp_path):
    rec = StopAt(4)
    result = resolved_train(model_cfg, data, tcfg(max_steps=8, eval_interval=2, save_every=0),
                            checkpoint_dir=tmp_path / "mid", callbacks=[rec])
    assert result.status == "stopped" and result.step == 4
    assert [e for e in rec.events if e[0] == "eval"] == [("eval", 2), ("eval", 4)]
    assert math.isfinite(result.summary["val_loss_best"]) and rec.events[-1] == ("end", "stopped")
    last = StopAt(8)  # asked only at the last evaluation: the run is over, it ends finished
    assert resolved_train(model_cfg, data, tcfg(max_steps=8, eval_interval=2, save_every=0),
                          checkpoint_dir=tmp_path / "last", callbacks=[last]).status == "finished"


def test_grad_accumulation_matches_one_big_batch(data, model_cfg, tmp_path):
    """2 micro-batches of 2 windows give the gradients of one batch of the same 4 windows."""
    runs = []
    for batch_size, accum in ((4, 1), (2, 2)):
        rec = Recorder()
        cfg = tcfg(batch_size=batch_size, grad_accum_steps=accum, max_steps=3, log_interval=1, eval_interval=3,
                   eval_batches=8 // batch_size, grad_clip=0.0)
        resolved_train(model_cfg, data, cfg, checkpoint_dir=tmp_path / str(accum), callbacks=[rec])
        runs.append(rec)
    big, accumulated = runs
    for step in (1, 2, 3):
        assert accumulated.logs[step]["grad_norm"] == pytest.approx(big.logs[step]["grad_norm"], rel=1e-5)
        assert accumulated.logs[step]["train_loss"] == pytest.approx(big.logs[step]["train_loss"], rel=1e-6)
    assert accumulated.evals[3]["val_loss"] == pytest.approx(big.evals[3]["val_loss"], rel=1e-5)


def test_training_checkpoint_holds_the_full_state(data, model_cfg, tmp_path):
    resolved_train(model_cfg, data, tcfg(max_steps=4), checkpoint_dir=tmp_path)
    state = load_checkpoint(tmp_path / "last.pt")  # weights_only=True: only plain types inside
    assert {"model_config", "model", "train_config", "optimizer", "scheduler", "scaler", "step", "rng", "sampler",
            "best_val_loss", "tokens_seen", "elapsed_sec", "no_improve_evals"} <= set(state)
    assert state["step"] == 4 and state["sampler"]["position"] == 4
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])


def test_ctrl_c_during_the_last_step_is_passed_on_after_the_final_checkpoint(data, model_cfg, tmp_path):
    """No step is left to stop at: the run completes and saves, then the caller sees the Ctrl-C
    (a sweep or a search must not start its next run)."""
    class IntAtLast(Recorder):
        def on_log(self, step, metrics):
            super().on_log(step, metrics)
            if step == 3:
                os.kill(os.getpid(), signal.SIGINT)

    recorder = IntAtLast()
    with pytest.raises(KeyboardInterrupt):
        resolved_train(model_cfg, data, tcfg(max_steps=3, log_interval=1, eval_interval=3, save_every=0),
                       checkpoint_dir=tmp_path, callbacks=[recorder])
    assert recorder.events[-2:] == [("checkpoint", "last", 3), ("end", "finished")]
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3


def test_a_signal_in_the_last_step_reaches_the_previous_handler_before_train_returns(data, model_cfg, tmp_path):
    """The caller's own handler (a sweep's, a search's) gets the signal once, synchronously: a
    re-raised signal could run its handler inside a finalizer, where an exception is dropped."""
    class TermAtLast(Recorder):
        def on_log(self, step, metrics):
            super().on_log(step, metrics)
            if step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        result = resolved_train(model_cfg, data, tcfg(max_steps=3, log_interval=1, eval_interval=3, save_every=0),
                                checkpoint_dir=tmp_path, callbacks=[TermAtLast()])
        assert received == [signal.SIGTERM]  # before train returned, not at some later bytecode
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.status == "finished" and load_checkpoint(tmp_path / "last.pt")["step"] == 3


def test_an_ignored_sigint_stays_ignored_and_sigterm_still_stops(data, model_cfg, tmp_path):
    """A background job (`mlproject train ... &` in a script) starts with SIGINT ignored: a Ctrl-C
    meant for the foreground command must not stop it, while SIGTERM still stops it cleanly."""
    class SignalAt(Recorder):
        def on_log(self, step, metrics):
            super().on_log(step, metrics)
            if step == 2:
                os.kill(os.getpid(), signal.SIGINT)
            if step == 4:
                os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        rec = SignalAt()
        result = resolved_train(model_cfg, data, tcfg(max_steps=8, log_interval=1, eval_interval=8, save_every=0),
                                checkpoint_dir=tmp_path, callbacks=[rec])
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # left as it was found
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.status == "interrupted" and load_checkpoint(tmp_path / "last.pt")["step"] == 4
    assert max(rec.logs) == 4  # SIGINT at step 2 did not stop it; SIGTERM at step 4 did


def test_sigterm_in_process_stops_at_the_step_boundary_and_resumes_exactly(data, model_cfg, tmp_path):
    class TermAt(Recorder):
        def on_log(self, step, metrics):
            super().on_log(step, metrics)
            if step == 4:
                os.kill(os.getpid(), signal.SIGTERM)

    cfg = tcfg(max_steps=10, log_interval=1, eval_interval=5, save_every=0)
    model_cfg = GPTConfig(**{**vars(model_cfg), "dropout": 0.1})  # dropout: the RNG state must resume too
    reference = resolved_train(model_cfg, data, cfg, checkpoint_dir=tmp_path / "ref")
    previous = signal.getsignal(signal.SIGTERM)
    stopped = TermAt()
    result = resolved_train(model_cfg, data, cfg, checkpoint_dir=tmp_path / "run", callbacks=[stopped])
    assert signal.getsignal(signal.SIGTERM) is previous
    assert result.status == "interrupted" and result.step == 4
    assert stopped.events[-2:] == [("checkpoint", "last", 4), ("end", "interrupted")]
    resumed = resolved_train(model_cfg, data, cfg, checkpoint_dir=tmp_path / "run",
                             resume_from=tmp_path / "run" / "last.pt")
    assert resumed.step == 10
    assert resumed.summary["train_loss_last"] == pytest.approx(reference.summary["train_loss_last"], abs=1e-6)
    assert resumed.summary["val_loss_best"] == pytest.approx(reference.summary["val_loss_best"], abs=1e-6)
    assert resumed.summary["tokens_seen"] == reference.summary["tokens_seen"]


def test_a_run_stopped_off_the_log_interval_resumes_onto_the_uninterrupted_curve(data, model_cfg, tmp_path):
    """The logging window (the train loss since the last log) goes into last.pt: the first log
    after the resume averages steps 4-6 as the uninterrupted run does, not 5-6 alone."""
    model_cfg = GPTConfig(**{**vars(model_cfg), "dropout": 0.1})
    cfg = tcfg(max_steps=10, log_interval=3, eval_interval=5, save_every=0)
    reference, stopped, resumed = Recorder(), Recorder(), Recorder()
    resolved_train(model_cfg, data, cfg, checkpoint_dir=tmp_path / "ref", callbacks=[reference])
    resolved_train(model_cfg, data, cfg, replace(RUNTIME, stop_at_step=4), checkpoint_dir=tmp_path / "run",
                   callbacks=[stopped])
    resolved_train(model_cfg, data, cfg, checkpoint_dir=tmp_path / "run", callbacks=[resumed],
                   resume_from=tmp_path / "run" / "last.pt")
    assert sorted(reference.logs) == [3, 6, 9, 10] and sorted(resumed.logs) == [6, 9, 10]
    for step in (3, 6, 9, 10):  # the curve the run's store holds: the stopped session's logs, then the resumed
        logged = (resumed.logs if step in resumed.logs else stopped.logs)[step]
        assert logged["train_loss"] == reference.logs[step]["train_loss"], step
        assert logged["tokens_seen"] == reference.logs[step]["tokens_seen"]
    assert sorted(resumed.evals) == sorted(reference.evals) == [5, 10]
    for step in (5, 10):
        assert resumed.evals[step]["val_loss"] == reference.evals[step]["val_loss"], step


def test_a_checkpoint_without_the_logging_window_resumes_with_an_empty_one(data, model_cfg, tmp_path):
    """last.pt written before the window was saved: the resumed run's first log averages its own steps."""
    cfg = tcfg(max_steps=6, log_interval=4, eval_interval=6, save_every=0)
    resolved_train(model_cfg, data, cfg, replace(RUNTIME, stop_at_step=2), checkpoint_dir=tmp_path)
    old = load_checkpoint(tmp_path / "last.pt")
    for key in ("window_loss_sum", "window_steps"):
        del old[key]
    torch.save(old, tmp_path / "old.pt")
    resumed = Recorder()
    result = resolved_train(model_cfg, data, cfg, checkpoint_dir=tmp_path, callbacks=[resumed],
                            resume_from=tmp_path / "old.pt")
    assert result.status == "finished" and sorted(resumed.logs) == [4, 6]
    assert math.isfinite(resumed.logs[4]["train_loss"])


def test_resuming_a_different_model_is_an_error(data, model_cfg, tmp_path):
    resolved_train(model_cfg, data, tcfg(max_steps=2), checkpoint_dir=tmp_path)
    other = GPTConfig(n_layer=3, n_head=2, d_model=64, block_size=32)
    with pytest.raises(MlprojectError, match="n_layer=2 in the checkpoint, 3 now"):
        resolved_train(other, data, tcfg(max_steps=2), checkpoint_dir=tmp_path, resume_from=tmp_path / "last.pt")


def test_resuming_from_a_model_only_checkpoint_is_an_error(data, model_cfg, tmp_path):
    from mlproject.model.gpt import GPT

    save_model_checkpoint(tmp_path / "model.pt", GPT(GPTConfig(**{**vars(model_cfg), "vocab_size": 512})))
    with pytest.raises(MlprojectError, match="model-only"):
        resolved_train(model_cfg, data, tcfg(max_steps=2), checkpoint_dir=tmp_path, resume_from=tmp_path / "model.pt")


def test_same_seed_same_run_and_data_seed_is_independent_of_init(data, model_cfg, tmp_path):
    def first_loss(**kw):
        rec = Recorder()
        resolved_train(model_cfg, data, tcfg(max_steps=1, log_interval=1, eval_interval=1, **kw),
                       checkpoint_dir=tmp_path, callbacks=[rec])
        return rec.logs[1]["train_loss"]

    assert first_loss(seed=1, data_seed=5) == first_loss(seed=1, data_seed=5)
    assert first_loss(seed=1, data_seed=5) != first_loss(seed=2, data_seed=5)
    assert first_loss(seed=1, data_seed=5) != first_loss(seed=1, data_seed=6)


def test_progress_lines_are_printed_when_not_on_a_terminal(data, model_cfg, tmp_path, capsys):
    resolved_train(model_cfg, data, tcfg(max_steps=4), replace(RUNTIME, progress="auto"), checkpoint_dir=tmp_path)
    out = capsys.readouterr().out
    assert "step 2/4 | loss" in out and "tok/s" in out and "eta" in out and "val_loss" in out


def test_progress_bar_when_asked(data, model_cfg, tmp_path, capsys):
    resolved_train(model_cfg, data, tcfg(max_steps=4), replace(RUNTIME, progress="bar"), checkpoint_dir=tmp_path)
    captured = capsys.readouterr()
    assert "4/4" in captured.err and "step 2/4 | loss" not in captured.out


def test_bf16_autocast_trains_on_cpu_when_asked(data, model_cfg, tmp_path):
    rec = Recorder()
    result = resolved_train(model_cfg, data, tcfg(max_steps=2, precision="bf16"), checkpoint_dir=tmp_path,
                            callbacks=[rec])
    assert rec.start["precision"] == "bf16"
    assert math.isfinite(result.summary["train_loss_last"]) and math.isfinite(result.summary["val_loss_best"])


def test_auto_precision_records_the_choice_made_for_this_cpu(data, model_cfg, tmp_path):
    from mlproject.training.device import cpu_has_bf16

    rec = Recorder()
    model, cfg = resolve(model_cfg, tcfg(max_steps=2, precision="auto"), data.vocab_size)
    assert cfg.precision == "auto"  # the request stays in the resolved config; the choice is `precision`
    train(model, data, cfg, runtime=RUNTIME, checkpoint_dir=tmp_path, callbacks=[rec])
    assert rec.start["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert load_checkpoint(tmp_path / "last.pt")["train_config"]["precision"] == "auto"


@pytest.mark.parametrize("fields, expected", [
    ({}, "export: exact as transformers GPT2LMHeadModel"),
    ({"model_version": "gpt3"}, "export: only as custom code (export-hf --allow-custom-code"),
])
def test_training_says_at_start_in_one_line_how_the_run_will_export(data, model_cfg, tmp_path, capsys, fields,
                                                                     expected):
    """The export check (`model.export_plan`) runs before the first step: nobody finds out after training."""
    cfg = dataclasses.replace(model_cfg, **fields)
    resolved_train(cfg, data, tcfg(max_steps=2, eval_interval=2, save_every=2), checkpoint_dir=tmp_path)
    lines = capsys.readouterr().out.splitlines()
    (line,) = [l for l in lines if l.startswith("export:")]
    assert line.startswith(expected)
    assert lines.index(line) < min(i for i, l in enumerate(lines) if l.startswith("step "))
    if fields:
        assert "bias=True is held by no transformers class" in line
