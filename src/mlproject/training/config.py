"""TrainConfig (what a run computes: optimisation, schedule, evaluation, checkpointing) and
RuntimeConfig (how it runs: device, threads, compilation, progress; never what it computes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from mlproject.config import check_types, field
from mlproject.data.config import DataRuntimeConfig
from mlproject.errors import ConfigError

DEFAULT_WARMUP_FRACTION = 0.05  # of the run's steps, when neither warmup_steps nor warmup_fraction is set


@dataclass
class TrainConfig:
    """One training run. Optimizer fields left None come from the model version's recipe."""

    batch_size: int = field(16, help="sequences per micro-batch (per process under DDP)")
    grad_accum_steps: int = field(1, help="micro-batches per optimizer step")
    epochs: int = field(1, help="passes over the training windows (training ends at epochs or max_steps)")
    max_steps: int | None = field(None, help="optimizer steps (whichever of epochs/max_steps ends first)")
    learning_rate: float = field(6e-4, help="peak learning rate", aliases=("--lr", "--base-lr", "--base_lr"))
    min_lr_ratio: float = field(0.1, help="cosine decay floor as a fraction of the peak")
    warmup_steps: int | None = field(None, help="linear warmup in optimizer steps (capped at half the run); "
                                                "excludes warmup_fraction")
    warmup_fraction: float | None = field(None, help="linear warmup as a fraction of the run's steps (default "
                                                     f"{DEFAULT_WARMUP_FRACTION} when neither is set); excludes "
                                                     "warmup_steps")
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
    seed: int = field(42, help="seed of model initialisation and dropout")
    data_seed: int | None = field(None, help="seed of the batch order (default: seed); independent of init")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        "auto", help="auto: bf16 autocast on CUDA GPUs and CPUs that support it natively, else fp32")
    amp: bool = field(False, help="mixed precision in amp_dtype: the original's switch, it sets precision "
                                  "(over the profile's or --precision)")
    amp_dtype: Literal["bf16", "fp16"] = field("bf16", help="autocast dtype of --amp")

    # A YAML key or flag of earlier releases, and what it is now (`from_dict` calls `upgrade`).
    LEGACY_FLAGS: ClassVar[dict[str, str]] = {
        "warmup": "linear warmup: a fraction of the run if < 1 (warmup_fraction), else a step count (warmup_steps)"}

    @staticmethod
    def upgrade(data: dict[str, Any]) -> dict[str, Any]:
        """`warmup` (a fraction below 1, a step count otherwise) as warmup_fraction or warmup_steps."""
        if "warmup" not in data:
            return data
        data = dict(data)
        value = data.pop("warmup")
        try:
            fraction = float(value) < 1
        except (TypeError, ValueError):
            raise ConfigError(f"warmup={value!r} is not a valid value; expected a fraction below 1 or a step "
                              "count") from None
        name = "warmup_fraction" if fraction else "warmup_steps"
        if data.get(name) is not None:
            raise ConfigError(f"warmup={value!r} and {name}={data[name]!r} are both set; give one")
        data[name] = value
        return data

    @property
    def warmup_share(self) -> float | None:
        """The warmup as a fraction of the run (DEFAULT_WARMUP_FRACTION when neither field is set),
        or None when it is a step count."""
        if self.warmup_steps is not None:
            return None
        return DEFAULT_WARMUP_FRACTION if self.warmup_fraction is None else self.warmup_fraction

    def validate(self) -> None:
        check_types(self, source="train")
        for name in ("batch_size", "grad_accum_steps", "epochs", "eval_interval", "log_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be positive")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"max_steps={self.max_steps} must be positive")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate={self.learning_rate} must be positive")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        self._validate_warmup()
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        for name in ("seed", "data_seed"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0 (numpy and torch seeds are unsigned)")
        for name in ("eval_batches", "save_every", "grad_clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        # None means no early stopping; a negative count would stop at the first evaluation
        if self.early_stopping_patience is not None and self.early_stopping_patience < 0:
            raise ConfigError(f"early_stopping_patience={self.early_stopping_patience} must be >= 0 "
                              "(or null for the default)")
        self._validate_optimizer()

    def _validate_warmup(self) -> None:
        if self.warmup_steps is not None and self.warmup_fraction is not None:
            raise ConfigError(f"warmup_steps={self.warmup_steps} and warmup_fraction={self.warmup_fraction} are "
                              "both set; give one (steps, or a fraction of the run)")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps={self.warmup_steps} must be >= 0")
        if self.warmup_fraction is not None and not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"warmup_fraction={self.warmup_fraction} must be in [0, 1) (a share of the run; "
                              "warmup_steps for a step count)")

    def _validate_optimizer(self) -> None:
        """The AdamW fields a recipe leaves open (finiteness is checked for every float field)."""
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError(f"weight_decay={self.weight_decay} must be >= 0")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"{name}={value} must be in [0, 1)")


@dataclass
class RuntimeConfig(DataRuntimeConfig):
    """How a run goes, never what it computes: the data caches and their workers (the fields of
    DataRuntimeConfig), the device, threads, compilation, progress and the side outputs. Two runs
    that differ only here train the same model, so a sweep resumed on another machine still
    matches its children (this section is outside the sweep key)."""

    device: str = field("auto", help="auto, cpu, cuda, cuda:N or mps")
    num_threads: int | None = field(None, help="torch intra-op threads (default: torch's choice)")
    compile: bool = field(False, help="torch.compile the model")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] | None = field(
        None, help="mode passed to torch.compile (default: torch's)")
    peak_flops: float | None = field(None, help="peak FLOP/s for MFU (default: device table or CPU probe)")
    progress: Literal["auto", "bar", "lines"] = field("auto", help="progress bar on terminals, lines otherwise")
    save_every_epochs: int | None = field(None, aliases=("--save-ckpt-every", "--save_ckpt_every"),
                                          help="write checkpoints/last.pt every N epochs instead of every "
                                               "save_every steps (the original's --save-ckpt-every)")
    preview_every: int | None = field(None, help="every N steps print a decoded sample (the model's argmax "
                                                 "continuation of a validation window) and log it as text")
    allow_nonfinite: bool = field(False, help="keep training when the loss becomes NaN or infinite (default: stop "
                                              "the run FAILED, with no model logged)")
    stop_at_step: int | None = field(None, help="end the run after this optimizer step, with the learning-rate "
                                                "schedule of the full run (how `reproduce --max-steps` re-makes "
                                                "the start of a run exactly)")

    # Sections whose keys of this class's fields are moved here when a file still has them there
    # (earlier releases kept these settings under train: and data:), with a note on stderr.
    MOVED_FROM: ClassVar[tuple[str, ...]] = ("train", "data")
    # The section each field was in before this one existed (train: unless named here). MLflow
    # params keep those names (`train.device`), which users' stores and queries hold.
    FORMERLY: ClassVar[dict[str, str]] = {"cache_dir": "data", "num_workers": "data"}

    def validate(self) -> None:
        super().validate()
        # None means torch's thread count; a negative count would fail inside torch after the run exists
        if self.num_threads is not None and self.num_threads < 0:
            raise ConfigError(f"num_threads={self.num_threads} must be >= 0 (or null for the default)")
        for name in ("save_every_epochs", "preview_every", "stop_at_step"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be positive (or null to disable)")
        if self.peak_flops is not None and self.peak_flops <= 0:
            raise ConfigError(f"peak_flops={self.peak_flops} must be positive (FLOP/s)")
