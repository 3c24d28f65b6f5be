"""TrainConfig: optimisation, schedule, evaluation, checkpointing and runtime settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mlproject.config import check_types, field
from mlproject.errors import ConfigError


@dataclass
class TrainConfig:
    """One training run. Optimizer fields left None come from the model version's recipe."""

    batch_size: int = field(16, help="sequences per micro-batch (per process under DDP)")
    grad_accum_steps: int = field(1, help="micro-batches per optimizer step")
    epochs: int = field(1, help="passes over the training windows (training ends at epochs or max_steps)")
    max_steps: int | None = field(None, help="optimizer steps (whichever of epochs/max_steps ends first)")
    learning_rate: float = field(6e-4, help="peak learning rate", aliases=("--lr", "--base-lr", "--base_lr"))
    min_lr_ratio: float = field(0.1, help="cosine decay floor as a fraction of the peak")
    warmup: float = field(0.05, help="linear warmup: a fraction of the run if < 1, else a step count; "
                                     "always capped below the run's total steps",
                         aliases=("--warmup-steps", "--warmup_steps"))
    scheduler: Literal["cosine", "warmup_cosine", "none", "constant"] = field(
        "cosine", aliases=("--scheduler-type", "--scheduler_type"),
        help="learning-rate schedule: cosine and warmup_cosine warm up then decay to min_lr_ratio; none and "
             "constant train at the peak rate throughout (the original suite's names)")
    weight_decay: float | None = field(None, help="AdamW weight decay (default: recipe)")
    beta1: float | None = field(None, help="AdamW beta1 (default: recipe)")
    beta2: float | None = field(None, help="AdamW beta2 (default: recipe)")
    recipe: Literal["gpt2", "gpt3"] | None = field(
        None, help="optimizer recipe defaults (default: the model version's)")
    grad_clip: float = field(1.0, help="global gradient-norm clip (0 disables)")
    label_smoothing: float = field(0.0, help="cross-entropy label smoothing")
    eval_interval: int = field(100, help="validate every N optimizer steps (a bare --val-checking: the default)",
                               aliases=("--val-checking", "--val_checking"), bare=True)
    eval_batches: int = field(20, help="validation batches per evaluation (0: the full split)")
    early_stopping_patience: int | None = field(None, help="stop after N evaluations without improvement")
    log_interval: int = field(10, help="log metrics every N steps", aliases=("--log-every", "--log_every"))
    save_every: int = field(100, help="write checkpoints/last.pt every N steps (and at the end)")
    save_every_epochs: int | None = field(None, aliases=("--save-ckpt-every", "--save_ckpt_every"),
                                          help="write checkpoints/last.pt every N epochs instead of every "
                                               "save_every steps (the original's --save-ckpt-every)")
    preview_every: int | None = field(None, help="every N steps print a decoded sample (the model's argmax "
                                                 "continuation of a validation window) and log it as text")
    seed: int = field(42, help="seed of model initialisation and dropout")
    data_seed: int | None = field(None, help="seed of the batch order (default: seed); independent of init")
    device: str = field("auto", help="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        "auto", help="auto: bf16 autocast on CUDA GPUs and CPUs that support it natively, else fp32")
    amp: bool = field(False, help="mixed precision in amp_dtype: the original's switch, it sets precision "
                                  "(over the profile's or --precision)")
    amp_dtype: Literal["bf16", "fp16"] = field("bf16", help="autocast dtype of --amp")
    compile: bool = field(False, help="torch.compile the model")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] | None = field(
        None, help="mode passed to torch.compile (default: torch's)")
    peak_flops: float | None = field(None, help="peak FLOP/s for MFU (default: device table or CPU probe)")
    num_threads: int | None = field(None, help="torch intra-op threads (default: torch's choice)")
    progress: Literal["auto", "bar", "lines"] = field("auto", help="progress bar on terminals, lines otherwise")
    allow_nonfinite: bool = field(False, help="keep training when the loss becomes NaN or infinite (default: stop "
                                              "the run FAILED, with no model logged)")
    stop_at_step: int | None = field(None, help="end the run after this optimizer step, with the learning-rate "
                                                "schedule of the full run (how `reproduce --max-steps` re-makes "
                                                "the start of a run exactly)")

    def validate(self) -> None:
        check_types(self, source="train")
        for name in ("batch_size", "grad_accum_steps", "epochs", "eval_interval", "log_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be positive")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"max_steps={self.max_steps} must be positive")
        if self.stop_at_step is not None and self.stop_at_step <= 0:
            raise ConfigError(f"stop_at_step={self.stop_at_step} must be positive")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate={self.learning_rate} must be positive")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if self.warmup < 0:
            raise ConfigError(f"warmup={self.warmup} must be >= 0 (a fraction < 1 or a step count)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        for name in ("seed", "data_seed"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0 (numpy and torch seeds are unsigned)")
        for name in ("eval_batches", "save_every", "grad_clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        # None means the default (torch's thread count, no early stopping); a negative count
        # would fail inside torch after the run exists, or stop at the first evaluation
        for name in ("num_threads", "early_stopping_patience"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0 (or null for the default)")
        for name in ("save_every_epochs", "preview_every"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be positive (or null to disable)")
        self._validate_optimizer()

    def _validate_optimizer(self) -> None:
        """The AdamW fields a recipe leaves open (finiteness is checked for every float field)."""
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError(f"weight_decay={self.weight_decay} must be >= 0")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"{name}={value} must be in [0, 1)")
        if self.peak_flops is not None and self.peak_flops <= 0:
            raise ConfigError(f"peak_flops={self.peak_flops} must be positive (FLOP/s)")
