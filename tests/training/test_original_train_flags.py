"""The original suite's training flags, each read by the CLI into its field and seen in training:
`--base-lr`, `--warmup-steps`, `--scheduler-type`, `--log-every`, `--save-ckpt-every` (epochs),
`--preview-every`, `--amp`/`--amp-dtype`, `--compile-mode`, `--layernorm-eps`, `--rope-base`,
`--resid-dropout`."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mlproject.app.config import RunConfig
from mlproject.cli import build_parser
from mlproject.errors import ConfigError
from mlproject.model.gpt import GPT
from mlproject.training.resolve import resolve
from mlproject.config import replace
from test_trainer import RUNTIME, Recorder, resolved_train, synthetic_data, tcfg


def flags(*argv: str) -> RunConfig:
    """The config `mlproject train ARGV` trains with (the default profile unless a flag says)."""
    return RunConfig.load(None, build_parser().parse_args(["train", *argv]))


def with_flags(*argv: str, **base) -> object:
    """The tiny TrainConfig with the train fields the flags set."""
    given = flags(*argv).train
    changed = {f.name: getattr(given, f.name) for f in dataclasses.fields(given)
               if getattr(given, f.name) != f.default}
    return tcfg(**{**base, **changed})


def runtime_flags(*argv: str) -> object:
    """The tests' RuntimeConfig with the runtime fields the flags set."""
    given = flags(*argv).runtime
    return replace(RUNTIME, **{f.name: getattr(given, f.name) for f in dataclasses.fields(given)
                               if getattr(given, f.name) != f.default})


class Previews(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.previews: dict[int, str] = {}

    def on_preview(self, step, text):
        self.previews[step] = text


def test_base_lr_and_scheduler_none_train_at_that_rate_throughout(data, model_cfg, tmp_path):
    rec = Recorder()
    cfg = with_flags("--base-lr", "2e-3", "--scheduler-type", "none", "--log-every", "3", max_steps=9)
    assert (cfg.learning_rate, cfg.scheduler, cfg.log_interval) == (2e-3, "none", 3)
    resolved_train(model_cfg, data, cfg, checkpoint_dir=tmp_path, callbacks=[rec])
    assert sorted(rec.logs) == [3, 6, 9]  # --log-every
    assert [rec.logs[s]["lr"] for s in (3, 6, 9)] == [pytest.approx(2e-3)] * 3
    assert rec.start["warmup_steps"] == 0


@pytest.mark.parametrize("name", ["cosine", "warmup_cosine"])
def test_cosine_schedules_warm_up_for_warmup_steps_then_decay(data, model_cfg, tmp_path, name):
    rec = Recorder()
    cfg = with_flags("--base-lr", "1e-3", "--scheduler-type", name, "--warmup-steps", "3", "--log-every", "1",
                     max_steps=9)
    assert cfg.warmup_steps == 3 and cfg.warmup_fraction is None
    resolved_train(model_cfg, data, cfg, checkpoint_dir=tmp_path, callbacks=[rec])
    assert rec.start["warmup_steps"] == 3
    lrs = [rec.logs[s]["lr"] for s in range(1, 10)]
    assert lrs[:3] == [pytest.approx(1e-3 * k / 3) for k in (1, 2, 3)]
    assert lrs[3] == pytest.approx(1e-3) and lrs[4] < 1e-3 and lrs[-1] == pytest.approx(1e-3 * cfg.min_lr_ratio)


def test_an_unknown_scheduler_type_is_a_one_line_error():
    with pytest.raises(ConfigError, match="scheduler='linear'.*cosine\\|warmup_cosine\\|none\\|constant"):
        flags("--scheduler-type", "linear")


def test_save_ckpt_every_counts_epochs(model_cfg, tmp_path):
    data = synthetic_data(train_windows=40)  # batch 8: 5 steps per epoch
    rec = Recorder()
    runtime = runtime_flags("--save-ckpt-every", "2")
    assert runtime.save_every_epochs == 2
    resolved_train(model_cfg, data, tcfg(batch_size=8, epochs=5, max_steps=None, eval_interval=100), runtime,
                   checkpoint_dir=tmp_path, callbacks=[rec])
    lasts = [e[2] for e in rec.events if e[:2] == ("checkpoint", "last")]
    assert lasts == [10, 20, 25]  # epochs 2 and 4, and the end of the run


def test_preview_every_reports_the_decoded_first_validation_window(data, model_cfg, tmp_path):
    rec = Previews()
    resolved_train(model_cfg, data, tcfg(max_steps=8), runtime_flags("--preview-every", "4"), checkpoint_dir=tmp_path,
                   callbacks=[rec])
    assert sorted(rec.previews) == [4, 8]
    window = [int(t) for t in data.val.tokens[:33]]
    text = rec.previews[8]
    assert f"CTX: {data.tokenizer.decode(window[:32])!r}" in text
    assert f"REF: {data.tokenizer.decode(window[1:33])!r}" in text
    assert "HYP: " in text and text.startswith("preview at step 8")


def test_amp_sets_the_precision_to_amp_dtype(data, model_cfg, tmp_path):
    assert flags("--amp").train.amp and flags("--amp").train.amp_dtype == "bf16"
    _, resolved = resolve(model_cfg, flags("--amp", "--amp-dtype", "bf16").train, data.vocab_size)
    assert resolved.precision == "bf16"
    rec = Recorder()
    resolved_train(model_cfg, data, with_flags("--amp", max_steps=2, precision="auto"), checkpoint_dir=tmp_path,
                   callbacks=[rec])
    assert rec.start["precision"] == "bf16"
    # without --amp, the original profile trains in fp32 (this suite's default: auto)
    assert flags("--profile", "original").train.precision == "fp32"
    assert flags().train.precision == "auto"


def test_compile_mode_is_passed_to_torch_compile(data, model_cfg, tmp_path, monkeypatch):
    modes = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: modes.append(kw.get("mode")) or model)
    runtime = runtime_flags("--compile", "--compile-mode", "reduce-overhead")
    resolved_train(model_cfg, data, tcfg(max_steps=1), runtime, checkpoint_dir=tmp_path)
    assert modes == ["reduce-overhead"]


def test_layernorm_eps_rope_base_and_resid_dropout_build_the_model():
    cfg = flags("--layernorm-eps", "1e-6", "--rope-base", "500", "--pos-encoding", "rope", "--resid-dropout",
                "0.25", "--dropout", "0.1", "--n-layer", "1", "--d-model", "64", "--n-head", "2",
                "--block-size", "16").model
    assert (cfg.norm_eps, cfg.rope_theta, cfg.resid_dropout) == (1e-6, 500.0, 0.25)
    model = GPT(dataclasses.replace(cfg, vocab_size=64).resolved())
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and {m.eps for m in norms} == {1e-6}
    assert {m.p for name, m in model.named_modules() if name.endswith("resid_dropout")} == {0.25}
