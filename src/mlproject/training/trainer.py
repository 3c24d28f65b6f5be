"""The training loop: AdamW, warmup + cosine, accumulation, AMP, DDP, eval, checkpoints, resume.

`train()` knows nothing of MLflow: it reports through `TrainerCallback`s (the tracking layer
subclasses it) and returns a `TrainResult`. A run killed at any point continues exactly from
its last checkpoint: the checkpoint holds the model, optimizer, scheduler, grad scaler, RNG
and batch-sampler state, so on CPU a resumed run reaches the same losses as one that was
never stopped. SIGTERM/SIGINT stop the run at the next step boundary with a checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
import torch.nn.functional as F

from mlproject.errors import MlprojectError
from mlproject.model.config import GPTConfig
from mlproject.training import distributed as D
from mlproject.training.checkpoint import clean_state_dict, load_checkpoint, model_state, save_checkpoint
from mlproject.training.config import TrainConfig
from mlproject.training.device import (autocast_dtype, configure_backends, needs_grad_scaler, precision_name,
                                       select_device)
from mlproject.training.optim import build_optimizer, build_scheduler, resolve_recipe, resolve_warmup
from mlproject.training.throughput import StepTimer, mfu, peak_flops, peak_memory_mb

VOCAB_MULTIPLE = 64  # embedding rows padded to a multiple of 64 for efficient matmuls (nanoGPT: 50257 -> 50304)


class TrainerCallback:
    """Hooks the trainer calls on the main process; every method is a no-op here."""

    def on_train_start(self, info: dict) -> None:
        """info: params_total, params_non_embedding, flops_per_token, total_steps, steps_per_epoch,
        start_step, device, world_size, precision, peak_flops, model_config (resolved GPTConfig),
        train_config (resolved TrainConfig), plus warmup_steps, tokens_per_step, peak_flops_source."""

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        """train_loss, lr, grad_norm, tokens_per_sec, ms_per_step, mfu, data_time_share,
        peak_mem_mb, tokens_seen, epoch."""

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        """val_loss, val_ppl, val_token_acc, val_bpb."""

    def on_checkpoint(self, path: Path, kind: str, step: int) -> None:
        """A checkpoint was written; kind is "last" or "best"."""

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


# ----------------------------------------------------------------------------- helpers

class _StopRequest:
    """SIGTERM/SIGINT handlers that ask the loop to stop at the next step boundary.

    A second signal raises KeyboardInterrupt at once. Previous handlers come back on exit.
    Signal handlers can only be set from the main thread; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step "
              "(signal again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def resolve_model_config(model_cfg: GPTConfig, vocab_size: int) -> GPTConfig:
    """The model config a run trains: the tokenizer's vocabulary padded to VOCAB_MULTIPLE."""
    padded = VOCAB_MULTIPLE * math.ceil(vocab_size / VOCAB_MULTIPLE)
    return dataclasses.replace(model_cfg, vocab_size=padded).resolved()


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _gather_rng(device: torch.device, info: D.DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state (its own dropout stream), indexed by rank."""
    mine = _rng_state(device)
    if not info.enabled:
        return [mine]
    states: list[Any] = [None] * info.world_size
    torch.distributed.all_gather_object(states, {k: v.cpu() if torch.is_tensor(v) else v for k, v in mine.items()})
    return states


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key}={a.get(key)!r} in the checkpoint, {b.get(key)!r} now"
    return None


def eval_windows(num_tokens: int, block_size: int, batch_size: int, eval_batches: int,
                 world_size: int = 1) -> torch.Tensor:
    """Start indices of the fixed validation windows: consecutive, non-overlapping, in order.

    The same windows every evaluation, so val_loss curves compare checkpoints, not samples:
    eval_batches batches of batch_size per process (0: every window of the split), so N
    processes evaluate what one process with N times the batch size would.
    """
    n = (num_tokens - 1) // block_size  # each window needs block_size + 1 tokens (inputs + shifted targets)
    if eval_batches > 0:
        n = min(n, eval_batches * batch_size * world_size)
    return torch.arange(n, dtype=torch.int64) * block_size


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokens: Any, starts: torch.Tensor, block_size: int, batch_size: int,
             device: torch.device, amp: torch.dtype | None, info: D.DistInfo,
             token_bytes: torch.Tensor | None = None) -> dict[str, float]:
    """val_loss (mean token cross-entropy), val_ppl and val_token_acc over `starts`, sharded by rank.

    With `token_bytes` (UTF-8 bytes per token id, `data.bpb.token_byte_lengths`) also val_bpb:
    the summed nats over ln 2 times the bytes of the evaluated targets (see `data.bpb`).
    """
    from mlproject.data.batches import get_batch
    from mlproject.data.bpb import bits_per_byte

    was_training = model.training
    model.eval()
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    sums = torch.zeros(4, dtype=acc_dtype, device=device)  # loss sum, correct, tokens, target bytes
    mine = starts[info.rank::info.world_size]
    for i in range(0, len(mine), batch_size):
        x, y = get_batch(tokens, mine[i:i + batch_size], block_size)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits, _ = model(x)
        logits = logits.float().view(-1, logits.size(-1))  # (B*T, V)
        y = y.view(-1)
        sums[0] += F.cross_entropy(logits, y, reduction="sum")
        sums[1] += (logits.argmax(dim=-1) == y).sum()
        sums[2] += y.numel()
        if token_bytes is not None:
            sums[3] += token_bytes[y].sum()
    D.all_reduce_sum_(sums, info)
    model.train(was_training)
    loss = (sums[0] / sums[2]).item()
    out = {"val_loss": loss, "val_ppl": math.exp(min(loss, 700.0)), "val_token_acc": (sums[1] / sums[2]).item()}
    if token_bytes is not None:
        out["val_bpb"] = bits_per_byte(sums[0].item(), sums[3].item())
    return out


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _format_seconds(sec: float) -> str:
    sec = int(max(sec, 0))
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class _Progress:
    """A tqdm bar on terminals (or when asked), plain periodic lines otherwise; main rank only."""

    def __init__(self, mode: str, total: int, initial: int, enabled: bool) -> None:
        use_bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.bar = None
        self.enabled = enabled
        self.total = total
        if enabled and use_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def log(self, step: int, m: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{m['train_loss']:.4f}", tok_s=f"{m['tokens_per_sec']:,.0f}", refresh=False)
            return
        eta = (self.total - step) * m["ms_per_step"] / 1000
        self.write(f"step {step}/{self.total} | loss {m['train_loss']:.4f} | lr {m['lr']:.2e} | "
                   f"{m['tokens_per_sec']:,.0f} tok/s | mfu {m['mfu']:.1%} | eta {_format_seconds(eta)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- train

def train(model_cfg: GPTConfig, data: Any, cfg: TrainConfig, *, checkpoint_dir: Path,
          callbacks: Sequence[TrainerCallback] = (), resume_from: Path | None = None) -> TrainResult:
    """Train a GPT on `data` (a PreparedData); see the module docstring. Exceptions propagate."""
    device = select_device(cfg.device)
    info, created_group = D.init_distributed(use_cuda=device.type == "cuda")
    try:
        return _train(model_cfg, data, cfg, Path(checkpoint_dir), callbacks, resume_from, device, info)
    finally:
        if info.enabled:
            D.barrier(info)  # rank 0 may still be writing the final checkpoint
        D.cleanup(created_group)


def _train(model_cfg: GPTConfig, data: Any, cfg: TrainConfig, checkpoint_dir: Path,
           callbacks: Sequence[TrainerCallback], resume_from: Path | None, device: torch.device,
           info: D.DistInfo) -> TrainResult:
    from mlproject.data.batches import BatchLoader, WindowSampler
    from mlproject.model.gpt import GPT

    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    callbacks = list(callbacks) if info.is_main else []
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    configure_backends(device)

    # ---- configs: what is resolved here is what the run records
    model_cfg = resolve_model_config(model_cfg, data.vocab_size)
    cfg = resolve_recipe(cfg, model_cfg.model_version)
    cfg = dataclasses.replace(cfg, data_seed=cfg.seed if cfg.data_seed is None else cfg.data_seed)
    block_size = model_cfg.block_size
    amp = autocast_dtype(device, cfg.precision)
    ckpt = load_checkpoint(resume_from) if resume_from is not None else None
    if ckpt is not None:
        if "optimizer" not in ckpt:
            raise MlprojectError(f"{resume_from} is a model-only checkpoint; resuming needs a training "
                                 "checkpoint (last.pt)")
        diff = _config_diff(ckpt["model_config"], dataclasses.asdict(model_cfg))
        if diff:
            raise MlprojectError(f"cannot resume from {resume_from}: the model differs ({diff})")

    # ---- model: the init depends on `seed` only; the batch order on `data_seed` only
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    raw_model = GPT(model_cfg).to(device)
    if ckpt is not None:
        raw_model.load_state_dict(clean_state_dict(ckpt["model"]))
    if info.enabled:  # different dropout masks per replica
        torch.manual_seed(cfg.seed + info.rank)
    model: torch.nn.Module = torch.compile(raw_model) if cfg.compile else raw_model
    eval_model = model
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    train_tokens, val_tokens = data.train.tokens, data.val.tokens
    sampler = WindowSampler(len(train_tokens), block_size, cfg.batch_size, seed=cfg.data_seed,
                            rank=info.rank, world_size=info.world_size)
    steps_per_epoch = sampler.steps_per_epoch // cfg.grad_accum_steps
    if steps_per_epoch <= 0:
        raise MlprojectError(
            f"the training split ({len(train_tokens):,} tokens) has too few windows of block_size={block_size} "
            f"for one step of batch_size={cfg.batch_size} x grad_accum_steps={cfg.grad_accum_steps}"
            f"{f' x {info.world_size} processes' if info.enabled else ''}")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    val_starts = eval_windows(len(val_tokens), block_size, cfg.batch_size, cfg.eval_batches, info.world_size)
    if len(val_starts) == 0:
        raise MlprojectError(f"the validation split ({len(val_tokens):,} tokens) is shorter than one "
                             f"window of block_size={block_size} + 1")

    token_bytes = None  # bytes per token id, for val_bpb (a PreparedData carries its tokenizer)
    if getattr(data, "tokenizer", None) is not None:
        from mlproject.data.bpb import token_byte_lengths

        token_bytes = torch.from_numpy(token_byte_lengths(data.tokenizer)).to(device)

    optimizer = build_optimizer(raw_model, cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, cfg.precision))

    step, tokens_seen, elapsed_base = 0, 0, 0.0
    best_val_loss, no_improve_evals = float("inf"), 0
    best_val_bpb = float("nan")  # val_bpb of the evaluation with the best val_loss
    if ckpt is not None:  # the sampler refuses a checkpoint of another data or batch layout
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        sampler.load_state_dict(ckpt["sampler"])
        step, tokens_seen = int(ckpt["step"]), int(ckpt["tokens_seen"])
        elapsed_base = float(ckpt["elapsed_sec"])
        best_val_loss, no_improve_evals = float(ckpt["best_val_loss"]), int(ckpt["no_improve_evals"])
        best_val_bpb = float(ckpt.get("best_val_bpb", float("nan")))
        _set_rng_state(ckpt["rng"][info.rank], device)  # last: the model init above drew from the RNG

    tokens_per_step = cfg.batch_size * block_size * cfg.grad_accum_steps * info.world_size
    warmup_steps = resolve_warmup(cfg.warmup, total_steps)
    flops_per_token = raw_model.flops_per_token()
    peak, peak_source = (peak_flops(device, amp, cfg.peak_flops) if info.is_main
                         else (cfg.peak_flops or float("nan"), "rank0"))
    start_info = {
        "params_total": raw_model.num_params(),
        "params_non_embedding": raw_model.num_params(exclude_embeddings=True),
        "flops_per_token": flops_per_token, "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
        "start_step": step, "device": str(device), "world_size": info.world_size,
        "precision": precision_name(amp), "peak_flops": peak, "peak_flops_source": peak_source,
        "warmup_steps": warmup_steps, "tokens_per_step": tokens_per_step,
        "model_config": model_cfg, "train_config": cfg,
    }
    for cb in callbacks:
        cb.on_train_start(start_info)

    last_path, best_path = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
    wrote_last = False
    wrote_best = ckpt is not None and best_path.is_file()  # a resumed run keeps its earlier best
    progress = _Progress(cfg.progress, total_steps, step, info.is_main)
    if info.is_main:
        resumed = f", resumed at step {step}" if ckpt is not None else ""
        progress.write(f"training {start_info['params_total'] / 1e6:.2f}M parameters on {device} "
                       f"({start_info['precision']}, {info.world_size} process(es)) for {total_steps} steps, "
                       f"{tokens_per_step:,} tokens/step, warmup {warmup_steps}{resumed}")

    def save_last() -> None:
        nonlocal wrote_last
        rng = _gather_rng(device, info)  # collective under DDP: every rank calls it
        if not info.is_main:
            return
        save_checkpoint(last_path, {
            **model_state(raw_model), "train_config": dataclasses.asdict(cfg),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "step": step, "rng": rng, "sampler": sampler.state_dict(),
            "best_val_loss": best_val_loss, "best_val_bpb": best_val_bpb, "tokens_seen": tokens_seen,
            "elapsed_sec": elapsed_base + time.perf_counter() - t_start, "no_improve_evals": no_improve_evals,
            "train_loss": float(step_loss.item()),  # a run resumed at its final step reports it
        })
        wrote_last = True
        for cb in callbacks:
            cb.on_checkpoint(last_path, "last", step)

    def run_eval() -> None:
        nonlocal best_val_loss, best_val_bpb, no_improve_evals, wrote_best
        metrics = evaluate(eval_model, val_tokens, val_starts, block_size, cfg.batch_size, device, amp, info,
                           token_bytes)
        improved = metrics["val_loss"] < best_val_loss
        if improved:
            best_val_loss, no_improve_evals = metrics["val_loss"], 0
            best_val_bpb = metrics.get("val_bpb", float("nan"))
        else:
            no_improve_evals += 1
        bpb = f" | val_bpb {metrics['val_bpb']:.4f}" if "val_bpb" in metrics else ""
        progress.write(f"step {step}: val_loss {metrics['val_loss']:.4f} | val_ppl {metrics['val_ppl']:.2f}{bpb} | "
                       f"val_acc {metrics['val_token_acc']:.3f}{' (best)' if improved else ''}")
        for cb in callbacks:
            cb.on_eval(step, metrics)
        if improved and info.is_main:
            save_checkpoint(best_path, {**model_state(raw_model), "train_config": dataclasses.asdict(cfg),
                                        "step": step, "val_loss": best_val_loss})
            wrote_best = True
            for cb in callbacks:
                cb.on_checkpoint(best_path, "best", step)

    # Batches are gathered ahead on a background thread on GPUs; the sampler only advances when a
    # batch is handed out, so its state (saved in checkpoints) never counts prefetched batches.
    on_gpu = device.type == "cuda"
    loader = BatchLoader(train_tokens, sampler, prefetch=2 if on_gpu else 0, pin_memory=on_gpu)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:  # one epoch per pass; the sampler moves on to the next epoch itself
            yield from loader

    t_start = time.perf_counter()
    timer = StepTimer(device)
    model.train()
    batch_iter = batches()
    window_loss = torch.zeros((), device=device)
    window_steps = 0
    step_loss = torch.full((), float(ckpt.get("train_loss", float("nan")) if ckpt else float("nan")), device=device)
    grad_norm = torch.zeros((), device=device)
    status, evaluated_at = "finished", -1
    clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    k = cfg.grad_accum_steps

    with _StopRequest() as stop:
        while step < total_steps:
            if D.any_process(stop.requested, info, device):
                status = "interrupted"
                break
            step_loss = torch.zeros((), device=device)
            for micro in range(k):
                with timer.data():
                    x, y = next(batch_iter)
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                # Under DDP only the last micro-batch all-reduces gradients; the others accumulate locally.
                sync = model.no_sync() if info.enabled and micro < k - 1 else contextlib.nullcontext()
                with sync:
                    with _autocast(device, amp):
                        _, loss = model(x, y, label_smoothing=cfg.label_smoothing)
                    # 1/k: the accumulated gradient is the mean over the k micro-batches, as one big batch
                    scaler.scale(loss / k).backward()
                step_loss += loss.detach() / k
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            tokens_seen += tokens_per_step
            window_loss += step_loss
            window_steps += 1
            timer.step(tokens_per_step)
            progress.step()

            if step % cfg.log_interval == 0 or step == total_steps:
                throughput = timer.window()
                metrics = {
                    "train_loss": D.all_reduce_mean(window_loss / window_steps, info, device),
                    "lr": lr, "grad_norm": float(grad_norm.item()), **throughput,
                    "mfu": mfu(flops_per_token, throughput["tokens_per_sec"] / info.world_size, peak),
                    "peak_mem_mb": peak_memory_mb(device), "tokens_seen": float(tokens_seen),
                    "epoch": step / steps_per_epoch,
                }
                window_loss.zero_()
                window_steps = 0
                progress.log(step, metrics)
                for cb in callbacks:
                    cb.on_log(step, metrics)
            with timer.paused():
                if step % cfg.eval_interval == 0 or step == total_steps:
                    run_eval()
                    evaluated_at = step
                    patience = cfg.early_stopping_patience
                    if patience is not None and no_improve_evals >= patience and step < total_steps:
                        progress.write(f"early stopping: no improvement in {patience} evaluations")
                        status = "early_stopped"
                if status == "early_stopped" or step == total_steps:
                    break
                if cfg.save_every and step % cfg.save_every == 0:
                    save_last()

        progress.close()
        batch_iter.close()  # stops the prefetch thread
        if status == "finished" and evaluated_at != step:
            run_eval()  # a resumed run that had already reached total_steps
        save_last()

    train_loss_last = D.all_reduce_mean(step_loss, info, device)
    result = TrainResult(
        status=status, step=step,
        summary={
            "val_loss_best": best_val_loss if math.isfinite(best_val_loss) else float("nan"),
            "val_ppl_best": math.exp(min(best_val_loss, 700.0)) if math.isfinite(best_val_loss) else float("nan"),
            "val_bpb_best": best_val_bpb,
            "train_loss_last": train_loss_last, "tokens_seen": float(tokens_seen),
            "elapsed_sec": elapsed_base + time.perf_counter() - t_start,
            "params_total": float(start_info["params_total"]),
            "tokens_per_sec": timer.mean_tokens_per_sec, "peak_mem_mb": peak_memory_mb(device),
        },
        last_checkpoint=last_path if info.is_main and wrote_last else None,
        best_checkpoint=best_path if info.is_main and wrote_best else None,
    )
    if info.is_main:
        progress.write(f"{status} at step {step}: train_loss {train_loss_last:.4f}, "
                       f"best val_loss {result.summary['val_loss_best']:.4f}")
    for cb in callbacks:
        cb.on_train_end(result)
    return result
