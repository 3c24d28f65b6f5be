"""TrackingConfig and RunConfig: everything one tracked training run is built from."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mlproject.config import build_sections, check_types, field, flatten, replace, to_dict
from mlproject.data.config import DataConfig
from mlproject.errors import ConfigError
from mlproject.model.config import GPTConfig
from mlproject.profiles import command_defaults
from mlproject.training.config import DEFAULT_WARMUP_FRACTION, RuntimeConfig, TrainConfig


@dataclass
class TrackingConfig:
    """Where and how a run is recorded in MLflow."""

    experiment_name: str | None = field(None, help="MLflow experiment (default: gpt-<dataset>)")
    run_name: str | None = field(None, help="MLflow run name")
    register_as: str | None = field(None, help="register the best model under this name")
    resume_from: str | None = field(None, help="continue a run: its run id or a checkpoint path")
    output_dir: str | None = field(None, help="keep the run's checkpoints in this folder (default: a scratch folder "
                                              "in the cache, removed once they are logged; untracked runs: "
                                              "$MLPROJECT_LOCAL_DIR or ./mlproject-outputs)")
    local_copies: bool = field(False, help="also copy the finished run's checkpoints and tokenizer (a sweep: its "
                                           "results) under $MLPROJECT_LOCAL_DIR or ./mlproject-outputs "
                                           "(profile original: on, at the original's paths)")
    log_model: bool = field(True, help="log the best model as an MLflow LoggedModel at the end")
    log_to_mlflow: bool = field(True, help="false disables tracking (benchmarks, debugging)")
    system_metrics: bool = field(True, help="log MLflow system metrics (CPU, memory; GPU with nvidia-ml-py)")
    system_metrics_interval: float = field(10.0, help="seconds between system metrics samples")
    profile: Literal["default", "original"] = field(
        "default", cli=False, help="the defaults the run started from (--profile): its mlproject.profile tag")
    # The original suite's local files (app.original_files): written in the original profile, or when named.
    ckpt_name: str | None = field(None, help="file name of the best checkpoint under output_dir, the original's "
                                             "(default <run>.pt); its last is <stem>.last.pt")
    history_path: str | None = field(None, help="where to write the run's history (torch.load(weights_only=True)); "
                                                "default <output_dir>/<run>_history.pt")
    config_path: str | None = field(None, help="where to write the run's config as JSON; default "
                                               "<output_dir>/<run>_config.json")
    # Runtime settings: the tracking section is outside the sweep key, so they never split a sweep.
    lease_heartbeat: float = field(10.0, help="seconds between heartbeats of the lease on the run being trained")
    lease_timeout: float = field(60.0, help="seconds without a heartbeat after which a run's lease is stale "
                                            "and another process may take the run over")

    def validate(self) -> None:
        check_types(self, source="tracking")
        if not self.system_metrics_interval > 0:
            raise ConfigError(f"tracking: system_metrics_interval={self.system_metrics_interval} must be > 0 (seconds)")
        if not 0 < self.lease_heartbeat < math.inf:
            raise ConfigError(f"tracking: lease_heartbeat={self.lease_heartbeat} must be a finite number > 0 (seconds)")
        if not self.lease_heartbeat < self.lease_timeout < math.inf:
            raise ConfigError(f"tracking: lease_timeout={self.lease_timeout} must be finite and longer than "
                              f"lease_heartbeat={self.lease_heartbeat} (seconds)")


@dataclass
class RunConfig:
    """The config of one training run: the sections of a train YAML file."""

    model: GPTConfig
    data: DataConfig
    train: TrainConfig
    tracking: TrackingConfig
    runtime: RuntimeConfig

    SECTIONS = {"model": GPTConfig, "data": DataConfig, "train": TrainConfig, "tracking": TrackingConfig,
                "runtime": RuntimeConfig}
    # What decides the trained model (MLflow params compare them, sweep keys hash them); the
    # tracking section only names and places the run, the runtime section only says how it goes.
    RECIPE = ("model", "data", "train")

    def resolved(self, vocab_size: int) -> RunConfig:
        """The config the run trains with and records, resolved once after data preparation.

        Model and training configs as `training.resolve.resolve` makes them for the tokenizer's
        `vocab_size`, which the data section records too; the experiment named (default
        `gpt-<dataset>`).
        """
        from mlproject.training.resolve import resolve

        model, train = resolve(self.model, self.train, vocab_size)
        return self.replace(model=model, data={"vocab_size": vocab_size}, train=train,
                            tracking={"experiment_name": self.experiment_name})

    def replace(self, *, source: str = "config", **sections: Any) -> RunConfig:
        """This config with `sections` changed, each a mapping {field: value} (or a whole section),
        validated as if loaded from a file (errors name `source: <section>`)."""
        unknown = set(sections) - set(self.SECTIONS)
        if unknown:
            raise ConfigError(f"{source}: unknown section {sorted(unknown)[0]!r}; "
                              f"allowed sections: {', '.join(self.SECTIONS)}")
        changed = {}
        for name, value in sections.items():
            changes = value if isinstance(value, Mapping) else to_dict(value, shallow=True)
            changed[name] = replace(getattr(self, name), where=f"{source}: {name}", **changes)
        return RunConfig(**{**{name: getattr(self, name) for name in self.SECTIONS}, **changed})

    def sections(self) -> dict[str, dict[str, Any]]:
        """The config as plain dicts, one per section (what the `Artifact.RESOLVED_CONFIG` artifact holds)."""
        return {name: to_dict(getattr(self, name)) for name in self.SECTIONS}

    def flat(self, sections: Sequence[str] = RECIPE) -> dict[str, Any]:
        """`sections` as `section.key` entries (MLflow params, sweep keys). By default the recipe:
        what decides the trained model."""
        return flatten({name: getattr(self, name) for name in sections})

    def params(self, sections: Sequence[str] = RECIPE) -> dict[str, Any]:
        """MLflow params: `sections` and the runtime section flat, named as earlier releases named
        them (`legacy_layout`: `train.device`, `train.warmup`), so users' stores and queries keep
        matching and a run resumed after an upgrade logs the params it logged before."""
        return flatten(legacy_layout({name: to_dict(getattr(self, name)) for name in (*sections, "runtime")}))

    def legacy_sections(self) -> dict[str, dict[str, Any]]:
        """`sections()` in the layout of earlier releases (`legacy_layout`)."""
        return legacy_layout(self.sections())

    def key_fields(self, drop: Collection[str] = ()) -> dict[str, Any]:
        """The recipe as sweep keys have always spelled it (`legacy_layout`), so the keys of sweeps in
        users' stores still match: `train.warmup` as one value, and `train.compile`, which was in
        the key before the runtime section existed. Fields named in `drop` (either spelling) are
        left out."""
        recipe = {name: to_dict(getattr(self, name)) for name in self.RECIPE}
        fields = flatten(legacy_layout({**recipe, "runtime": {"compile": self.runtime.compile}}))
        dropped = {KEY_SPELLING.get(name, name) for name in drop}
        return {name: value for name, value in fields.items() if name not in dropped}

    @property
    def experiment_name(self) -> str:
        """The experiment the run goes to: `tracking.experiment_name`, else `gpt-<dataset>`."""
        return self.experiment_for("gpt")

    def experiment_for(self, job: str) -> str:
        """The experiment of a `job` (train: gpt, compare, ablation, ladder, tune): `tracking.experiment_name`,
        else `<job>-<dataset>`, so a comparison and an ablation of one corpus are not mixed in one list."""
        return self.tracking.experiment_name or f"{job}-{self.data.dataset}"

    @property
    def former_default_experiment(self) -> str | None:
        """Where a job without `tracking.experiment_name` went before jobs had experiments of their
        own (`gpt-<dataset>`, as a training run): a re-run of one made then continues there."""
        return None if self.tracking.experiment_name else self.experiment_name

    @classmethod
    def load(cls, yaml_path: str | os.PathLike[str] | None = None,
             args: argparse.Namespace | None = None) -> RunConfig:
        """From a YAML file (sections model/data/train/tracking) with flags overriding it."""
        return cls(**build_sections(cls.SECTIONS, yaml_path=yaml_path, args=args, defaults=command_defaults(args)))


# Fields that sweep keys (and MLflow params) spell as earlier releases did (`legacy_layout`).
KEY_SPELLING = {"train.warmup_steps": "train.warmup", "train.warmup_fraction": "train.warmup",
                "runtime.compile": "train.compile"}


def legacy_layout(sections: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Config `sections` (as `RunConfig.sections` gives them) in the layout of earlier releases:
    the runtime fields under the sections they came from (`RuntimeConfig.FORMERLY`), the warmup as
    one `warmup` (a fraction below 1, else steps). MLflow params are named from this layout, so a
    run's params keep the names that users' stores and queries hold (and a resumed run logs the
    same ones), and a recorded older release reads it when it reproduces a run."""
    out = {name: dict(values) for name, values in sections.items() if name != "runtime"}
    for name, value in sections.get("runtime", {}).items():
        out.setdefault(RuntimeConfig.FORMERLY.get(name, "train"), {})[name] = value
    train = out.get("train", {})
    if "warmup_steps" in train:
        steps, fraction = train.pop("warmup_steps"), train.pop("warmup_fraction")
        train["warmup"] = float(steps) if steps is not None else (
            DEFAULT_WARMUP_FRACTION if fraction is None else fraction)
    return out


@dataclass
class ServerConfig:
    """An MLflow tracking server: SQL backend, proxied artifacts, loopback by default."""

    host: str = field("127.0.0.1", help="bind address (loopback by default; 0.0.0.0 exposes it)")
    port: int = field(5000, help="port")
    backend_store_uri: str = field("sqlite:///mlflow.db", help="SQLAlchemy URI (sqlite:///..., postgresql://...)")
    artifacts_destination: str = field("./mlartifacts", help="where proxied artifacts are stored")
    allowed_hosts: list[str] | None = field(None, help="extra Host headers to accept (container service names)")
    workers: int = field(2, help="server worker processes")
    startup_timeout: float = field(300.0, help="seconds the server has to answer /health before it counts as failed")
    auth: bool = field(False, help="require a user and password (MLflow's basic-auth app; the admin password "
                                   "comes from MLFLOW_AUTH_ADMIN_PASSWORD)")
    auth_database_uri: str = field("", help="where users and permissions are kept (default: the backend store's "
                                            "database, in tables of their own)")

    def validate(self) -> None:
        check_types(self, source="server")
        if self.startup_timeout <= 0:
            raise ConfigError(f"server: startup_timeout={self.startup_timeout} must be > 0 seconds")
