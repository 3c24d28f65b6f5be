"""The training loop: AdamW, warmup + cosine, accumulation, AMP, DDP, eval, checkpoints, resume.

`train()` knows nothing of MLflow: it reports through `TrainerCallback`s (the tracking layer
subclasses it) and returns a `TrainResult`. It takes resolved configs only
(`training.resolve.resolve`), so what a run records is what it trains. A run killed at any
point continues exactly from its last checkpoint (`training.checkpoint`: model, optimizer,
scheduler, grad scaler, RNG, batch-sampler and loop state), so on CPU a resumed run reaches
the same losses as one that was never stopped. SIGTERM/SIGINT stop the run at the next step
boundary with a checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mlproject.errors import MlprojectError
from mlproject.model.config import GPTConfig
from mlproject.model.export_plan import export_plan
from mlproject.schema import TrainStatus
from mlproject.training import distributed as D
from mlproject.training import evaluation
from mlproject.training.checkpoint import TrainingCheckpoint, TrainState, read_resume_checkpoint
from mlproject.training.config import RuntimeConfig, TrainConfig
from mlproject.training.device import (autocast, autocast_dtype, configure_backends, needs_grad_scaler,
                                       precision_name, select_device)
from mlproject.training.optim import build_optimizer, build_scheduler, scheduled_warmup
from mlproject.training.progress import Progress
from mlproject.training.resolve import require_resolved
from mlproject.training.throughput import StepTimer, mfu, peak_flops, peak_memory_mb


class NonFiniteLossError(MlprojectError):
    """The training or validation loss became NaN or infinite: the run cannot recover."""


class TrainerCallback:
    """Hooks the trainer calls on the main process; every method is a no-op here."""

    def on_train_start(self, info: dict) -> None:
        """info: params_total, params_non_embedding, flops_per_token, total_steps, steps_per_epoch,
        start_step, device, world_size, precision (the one used), peak_flops, peak_flops_source,
        warmup_steps, tokens_per_step. The configs are the caller's: `train()` takes them resolved."""

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        """train_loss, lr, grad_norm, tokens_per_sec, ms_per_step, mfu, data_time_share,
        peak_mem_mb, tokens_seen, epoch."""

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        """val_loss, val_ppl, val_token_acc, val_bpb."""

    def on_checkpoint(self, path: Path, kind: str, step: int) -> None:
        """A checkpoint was written; kind is "last" or "best"."""

    def on_preview(self, step: int, text: str) -> None:
        """A decoded sample of `--preview-every` (training.preview)."""

    def should_stop(self) -> bool:
        """Asked after each evaluation before the last step: True ends the run there, status
        "stopped", with its summary and checkpoints like any other end (a tune trial's pruner;
        callbacks run on the main process only, so this is for single-process runs)."""
        return False

    def on_train_end(self, result: TrainResult) -> None:
        """Training finished, stopped early or was interrupted (not called when it raised)."""


@dataclass
class TrainResult:
    status: str                  # "finished" | "early_stopped" | "interrupted"
    step: int
    summary: dict[str, float]    # val_loss_best, val_ppl_best, val_bpb_best, train_loss_last, tokens_seen,
                                 # elapsed_sec, params_total, tokens_per_sec (mean), peak_mem_mb
    last_checkpoint: Path | None
    best_checkpoint: Path | None


class _StopRequest:
    """SIGTERM/SIGINT handlers that ask the loop to stop at the next step boundary.

    A second signal raises KeyboardInterrupt at once. Previous handlers come back on exit.
    Signal handlers can only be set from the main thread; elsewhere this does nothing. A signal
    the process ignores stays ignored: a shell starts background jobs (`mlproject train ... &`)
    with SIGINT ignored, so a Ctrl-C meant for the foreground command does not stop them.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step "
              "(signal again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) != signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def pass_on(self) -> None:
        """Deliver a request the loop could not act on to the handler that was there before.

        A signal during the last step arrives when there is no step left to stop at: the run
        ends complete and saved, but whoever runs it (a sweep's next child, a search's next
        trial, the shell) must still see the Ctrl-C, or it would be swallowed.
        """
        if self.signum is None:
            return
        previous = self._previous.get(self.signum, signal.SIG_DFL)
        if callable(previous):
            # Called here, not re-raised: a re-raised signal runs its Python handler at some later
            # bytecode, which can be inside a finalizer the collector runs, where the
            # KeyboardInterrupt is printed and dropped ("Exception ignored in ...").
            previous(self.signum, None)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(self.signum)  # the default action (SIGTERM ends the process)


def train(model_cfg: GPTConfig, data: Any, cfg: TrainConfig, *, checkpoint_dir: Path,
          runtime: RuntimeConfig | None = None, callbacks: Sequence[TrainerCallback] = (),
          resume_from: Path | None = None) -> TrainResult:
    """Train a GPT on `data` (a PreparedData) with configs from `training.resolve.resolve`, on the
    device, threads and so on of `runtime` (default: RuntimeConfig()); see the module docstring.
    Exceptions propagate."""
    require_resolved(model_cfg, cfg)
    runtime = runtime or RuntimeConfig()
    device = select_device(runtime.device)
    info, created_group = D.init_distributed(use_cuda=device.type == "cuda")
    try:
        trainer = Trainer(model_cfg, data, cfg, runtime, Path(checkpoint_dir), callbacks, device, info)
        return trainer.fit(resume_from)
    finally:
        if info.enabled:
            D.barrier(info)  # rank 0 may still be writing the final checkpoint
        D.cleanup(created_group)


class Trainer:
    """One run of `train()`, shaped like torchtitan's Trainer: `setup` builds (and on resume
    restores) everything, then `fit` loops over `train_step`, `log`, `evaluate` and `save_last`.

    Only the main process calls back, prints and writes checkpoints; every process takes
    part in the collectives (loss and eval all-reduces, the stop decision, the RNG gather).
    """

    def __init__(self, model_cfg: GPTConfig, data: Any, cfg: TrainConfig, runtime: RuntimeConfig,
                 checkpoint_dir: Path, callbacks: Sequence[TrainerCallback], device: torch.device, info: D.DistInfo) -> None:
        if info.enabled and device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
        self.model_cfg, self.data, self.cfg, self.runtime = model_cfg, data, cfg, runtime
        self.device, self.info = device, info
        self.callbacks = list(callbacks) if info.is_main else []
        self.last_path, self.best_path = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
        self.state = TrainState()
        self.wrote_last = self.wrote_best = False

    # ------------------------------------------------------------------------- the loop

    def fit(self, resume_from: Path | None) -> TrainResult:
        """Train until total_steps, early stopping or a stop signal; ends with a last checkpoint."""
        self.setup(resume_from)
        cfg, state = self.cfg, self.state
        patience = cfg.early_stopping_patience
        status, evaluated_at = TrainStatus.FINISHED, -1
        with _StopRequest() as stop:
            while state.step < self.total_steps:
                if D.any_process(stop.requested, self.info, self.device):
                    status = TrainStatus.INTERRUPTED
                    break
                lr = self.train_step()
                if self.runtime.preview_every and state.step % self.runtime.preview_every == 0:
                    self.preview()
                # stop_at_step ends early but keeps the schedule of total_steps: the first steps of a run, exactly
                done = state.step == self.total_steps or state.step == self.runtime.stop_at_step
                if state.step % cfg.log_interval == 0 or done:
                    self.log(lr)
                with self.timer.paused():
                    if state.step % cfg.eval_interval == 0 or done:
                        self.evaluate()
                        evaluated_at = state.step
                        if patience is not None and state.no_improve_evals >= patience and not done:
                            self.progress.write(f"early stopping: no improvement in {patience} evaluations")
                            status = TrainStatus.EARLY_STOPPED
                        elif not done and any(getattr(cb, "should_stop", bool)() for cb in self.callbacks):
                            status = TrainStatus.STOPPED
                    if status in (TrainStatus.EARLY_STOPPED, TrainStatus.STOPPED) or done:
                        break
                    if self.save_interval and state.step % self.save_interval == 0:
                        self.save_last()

            self.progress.close()
            self.batches.close()  # stops the prefetch thread
            if status == TrainStatus.FINISHED and evaluated_at != state.step:
                self.evaluate()  # a resumed run that had already reached total_steps
            self.save_last()
        result = self.finish(status)  # collective under DDP: every rank gets here first
        if stop.requested and status != TrainStatus.INTERRUPTED:
            stop.pass_on()
        return result

    def train_step(self) -> float:
        """One optimizer step over grad_accum_steps micro-batches; returns the learning rate it used."""
        cfg, device, k = self.cfg, self.device, self.cfg.grad_accum_steps
        self.step_loss = torch.zeros((), device=device)
        for micro in range(k):
            with self.timer.data():
                x, y = next(self.batches)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            # Under DDP only the last micro-batch all-reduces gradients; the others accumulate locally.
            sync = self.model.no_sync() if self.info.enabled and micro < k - 1 else contextlib.nullcontext()
            with sync:
                with autocast(device, self.amp):
                    _, loss = self.model(x, y, label_smoothing=cfg.label_smoothing, logits="none")
                # 1/k: the accumulated gradient is the mean over the k micro-batches, as one big batch
                self.scaler.scale(loss / k).backward()
            self.step_loss += loss.detach() / k
        self.scaler.unscale_(self.optimizer)
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        self.grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.state.step += 1
        self.state.tokens_seen += self.tokens_per_step
        self.window_loss += self.step_loss  # stays on the device: no sync until the next log
        self.window_steps += 1
        self.timer.step(self.tokens_per_step)
        self.progress.step()
        return lr

    def log(self, lr: float) -> None:
        """Training metrics of the steps since the last log: mean loss over ranks, throughput, MFU."""
        state, info = self.state, self.info
        throughput = self.timer.window()
        metrics = {
            "train_loss": D.all_reduce_mean(self.window_loss / self.window_steps, info, self.device),
            "lr": lr, "grad_norm": float(self.grad_norm.item()), **throughput,
            "mfu": mfu(self.flops_per_token, throughput["tokens_per_sec"] / info.world_size, self.peak),
            "peak_mem_mb": peak_memory_mb(self.device), "tokens_seen": float(state.tokens_seen),
            "epoch": state.step / self.steps_per_epoch,
        }
        # A log off the interval (the last step of a stopped session) leaves the window open: it
        # goes into last.pt, and the resumed run's next log averages the steps an uninterrupted one would.
        if state.step % self.cfg.log_interval == 0:
            self.window_loss.zero_()
            self.window_steps = 0
        self.progress.log(state.step, metrics)
        for cb in self.callbacks:
            cb.on_log(state.step, metrics)
        self.check_finite("train_loss", metrics["train_loss"])

    def evaluate(self) -> None:
        """Validation loss on the fixed windows; a new best writes best.pt."""
        state = self.state
        metrics = evaluation.evaluate(self.eval_model, self.val_tokens, self.val_starts, self.model_cfg.block_size,
                                      self.cfg.batch_size, self.device, self.amp, self.info, self.token_bytes)
        improved = metrics["val_loss"] < state.best_val_loss
        if improved:
            state.best_val_loss, state.no_improve_evals = metrics["val_loss"], 0
            state.best_val_bpb = metrics.get("val_bpb", float("nan"))
        else:
            state.no_improve_evals += 1
        bpb = f" | val_bpb {metrics['val_bpb']:.4f}" if "val_bpb" in metrics else ""
        self.progress.write(f"step {state.step}: val_loss {metrics['val_loss']:.4f} | val_ppl {metrics['val_ppl']:.2f}"
                            f"{bpb} | val_acc {metrics['val_token_acc']:.3f}{' (best)' if improved else ''}")
        for cb in self.callbacks:
            cb.on_eval(state.step, metrics)
        self.check_finite("val_loss", metrics["val_loss"])
        if improved and self.info.is_main:
            self.checkpoint.save_best(self.best_path)
            self.wrote_best = True
            for cb in self.callbacks:
                cb.on_checkpoint(self.best_path, "best", state.step)

    def preview(self) -> None:
        """Print and report a decoded sample (main process; needs the data's tokenizer)."""
        tokenizer = getattr(self.data, "tokenizer", None)
        if tokenizer is None or not self.info.is_main:
            return
        from mlproject.training.preview import preview_text

        text = preview_text(self.raw_model, self.val_tokens, self.model_cfg.block_size, tokenizer.decode,
                            self.device, self.amp, self.state.step)
        self.progress.write(text)
        for cb in self.callbacks:
            cb.on_preview(self.state.step, text)

    def check_finite(self, name: str, value: float) -> None:
        """Stop the run when a loss is NaN or infinite (after it was logged, so the curve shows it).

        Nothing trains back from a NaN (every later step's weights are NaN), and a model logged
        from such a run would look like a result; `allow_nonfinite` keeps going for those who
        study the divergence itself. The value is the all-reduced one: every rank stops alike.
        """
        if self.runtime.allow_nonfinite or math.isfinite(value):
            return
        self.progress.close()
        self.batches.close()  # stops the prefetch thread
        raise NonFiniteLossError(
            f"{name} became {value} at step {self.state.step} (learning_rate={self.cfg.learning_rate}); the run stops "
            "FAILED and logs no model. Lower the learning rate or raise grad_clip, or give --allow-nonfinite to "
            "train on")

    def save_last(self) -> None:
        """last.pt with everything needed to continue exactly (every rank calls this)."""
        self.state.elapsed_sec = self.elapsed()
        self.state.train_loss = float(self.step_loss.item())
        # Collective under DDP: each rank restores the mean of the ranks' sums, and the mean it
        # logs next (sum + later losses, averaged over ranks) is the same as if never stopped.
        self.state.window_loss_sum = D.all_reduce_mean(self.window_loss, self.info, self.device)
        self.state.window_steps = self.window_steps
        if self.checkpoint.save_last(self.last_path):
            self.wrote_last = True
            for cb in self.callbacks:
                cb.on_checkpoint(self.last_path, "last", self.state.step)

    def elapsed(self) -> float:
        """Training seconds of this run, earlier sessions included."""
        return self.elapsed_before + time.perf_counter() - self.t_start

    def finish(self, status: str) -> TrainResult:
        """The result, reported to the callbacks; every rank returns the all-reduced final loss."""
        state, info = self.state, self.info
        train_loss_last = D.all_reduce_mean(self.step_loss, info, self.device)
        best = state.best_val_loss if math.isfinite(state.best_val_loss) else float("nan")
        result = TrainResult(
            status=status, step=state.step,
            summary={
                "val_loss_best": best,
                "val_ppl_best": math.exp(min(best, 700.0)) if math.isfinite(best) else float("nan"),
                "val_bpb_best": state.best_val_bpb,
                "train_loss_last": train_loss_last, "tokens_seen": float(state.tokens_seen),
                # training compute, PaLM's convention (GPT.flops_per_token): what a scaling ladder fits against
                "flops": float(self.flops_per_token) * float(state.tokens_seen),
                "elapsed_sec": self.elapsed(), "params_total": float(self.params_total),
                "tokens_per_sec": self.timer.mean_tokens_per_sec, "peak_mem_mb": peak_memory_mb(self.device),
            },
            last_checkpoint=self.last_path if info.is_main and self.wrote_last else None,
            best_checkpoint=self.best_path if info.is_main and self.wrote_best else None,
        )
        if info.is_main:
            self.progress.write(f"{status} at step {state.step}: train_loss {train_loss_last:.4f}, "
                                f"best val_loss {result.summary['val_loss_best']:.4f}")
        for cb in self.callbacks:
            cb.on_train_end(result)
        return result

    # ------------------------------------------------------------------------- setup

    def setup(self, resume_from: Path | None) -> None:
        """Build the model, data, optimizer and checkpoint; restore `resume_from`; report the start."""
        cfg, runtime, device, info = self.cfg, self.runtime, self.device, self.info
        if runtime.num_threads:
            torch.set_num_threads(runtime.num_threads)
        configure_backends(device)
        self.amp = autocast_dtype(device, cfg.precision)
        ckpt = read_resume_checkpoint(resume_from, self.model_cfg) if resume_from is not None else None
        self._build_model()
        self._build_data()
        self.optimizer = build_optimizer(self.raw_model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, cfg.precision))
        self.tokens_per_step = cfg.batch_size * self.model_cfg.block_size * cfg.grad_accum_steps * info.world_size
        self.params_total = self.raw_model.num_params()
        self.flops_per_token = self.raw_model.flops_per_token()
        self.peak, peak_source = (peak_flops(device, self.amp, runtime.peak_flops) if info.is_main
                                  else (runtime.peak_flops or float("nan"), "rank0"))
        self.checkpoint = TrainingCheckpoint(self.raw_model, cfg, self.optimizer, self.scheduler, self.scaler,
                                             self.sampler, self.state, device, info)
        if ckpt is not None:
            self.checkpoint.load_state_dict(ckpt)
            self.wrote_best = self.best_path.is_file()  # a resumed run keeps its earlier best
        self._report_start(peak_source, resumed=ckpt is not None)

        self.timer = StepTimer(device)
        self.window_loss = torch.full((), self.state.window_loss_sum, device=device)
        self.window_steps = self.state.window_steps
        self.step_loss = torch.full((), self.state.train_loss, device=device)
        self.grad_norm = torch.zeros((), device=device)
        self.model.train()
        self.elapsed_before, self.t_start = self.state.elapsed_sec, time.perf_counter()

    def _build_model(self) -> None:
        """The GPT (its init depends on `seed` only), compiled and wrapped in DDP as asked."""
        from mlproject.model.gpt import GPT

        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.raw_model = GPT(self.model_cfg).to(self.device)
        if info.enabled:  # different dropout masks per replica
            torch.manual_seed(cfg.seed + info.rank)
        runtime = self.runtime
        options = {"mode": runtime.compile_mode} if runtime.compile_mode else {}
        model: torch.nn.Module = torch.compile(self.raw_model, **options) if runtime.compile else self.raw_model
        self.eval_model = model
        if info.enabled:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.model = model

    def _build_data(self) -> None:
        """The batch order (it depends on `data_seed` only), schedule length, validation windows."""
        from mlproject.data.batches import BatchLoader, WindowSampler

        cfg, info, block_size = self.cfg, self.info, self.model_cfg.block_size
        train_tokens, self.val_tokens = self.data.train.tokens, self.data.val.tokens
        self.sampler = WindowSampler(len(train_tokens), block_size, cfg.batch_size, seed=cfg.data_seed,
                                     rank=info.rank, world_size=info.world_size)
        self.steps_per_epoch = self.sampler.steps_per_epoch // cfg.grad_accum_steps
        if self.steps_per_epoch <= 0:
            raise MlprojectError(
                f"the training split ({len(train_tokens):,} tokens) has too few windows of block_size={block_size} "
                f"for one step of batch_size={cfg.batch_size} x grad_accum_steps={cfg.grad_accum_steps}"
                f"{f' x {info.world_size} processes' if info.enabled else ''}")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        # --save-ckpt-every counts epochs (the original's unit), save_every optimizer steps
        every_epochs = self.runtime.save_every_epochs
        self.save_interval = every_epochs * self.steps_per_epoch if every_epochs else cfg.save_every
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.val_starts = evaluation.eval_windows(len(self.val_tokens), block_size, cfg.batch_size,
                                                  cfg.eval_batches, info.world_size)
        if len(self.val_starts) == 0:
            raise MlprojectError(f"the validation split ({len(self.val_tokens):,} tokens) is shorter than one "
                                 f"window of block_size={block_size} + 1")
        self.token_bytes = None  # bytes per token id, for val_bpb (a PreparedData carries its tokenizer)
        if getattr(self.data, "tokenizer", None) is not None:
            from mlproject.data.bpb import token_byte_lengths

            self.token_bytes = torch.from_numpy(token_byte_lengths(self.data.tokenizer)).to(self.device)
        # Batches are gathered ahead on a background thread on GPUs; the sampler only advances when a
        # batch is handed out, so its state (saved in checkpoints) never counts prefetched batches.
        on_gpu = self.device.type == "cuda"
        self.batches = _forever(BatchLoader(train_tokens, self.sampler, prefetch=2 if on_gpu else 0,
                                            pin_memory=on_gpu))

    def _report_start(self, peak_source: str, resumed: bool) -> None:
        """on_train_start with the run's figures; the first progress line."""
        info, state = self.info, self.state
        warmup_steps = scheduled_warmup(self.cfg, self.total_steps)
        start_info = {
            "params_total": self.params_total,
            "params_non_embedding": self.raw_model.num_params(exclude_embeddings=True),
            "flops_per_token": self.flops_per_token, "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch, "start_step": state.step, "device": str(self.device),
            "world_size": info.world_size, "precision": precision_name(self.amp), "peak_flops": self.peak,
            "peak_flops_source": peak_source, "warmup_steps": warmup_steps, "tokens_per_step": self.tokens_per_step,
        }
        for cb in self.callbacks:
            cb.on_train_start(start_info)
        self.progress = Progress(self.runtime.progress, self.total_steps, state.step, info.is_main)
        if info.is_main:
            resumed_at = f", resumed at step {state.step}" if resumed else ""
            self.progress.write(f"training {self.params_total / 1e6:.2f}M parameters on {self.device} "
                                f"({start_info['precision']}, {info.world_size} process(es)) for {self.total_steps} "
                                f"steps, {self.tokens_per_step:,} tokens/step, warmup {warmup_steps}{resumed_at}")
            # the check export-hf applies, told now: nobody finds out after training
            self.progress.write(export_plan(self.model_cfg).train_line())


def _forever(loader: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:  # one epoch per pass; the sampler moves on to the next epoch itself
        yield from loader
