"""Optimizer recipes, parameter groups, warmup capping and the LR schedule."""

from __future__ import annotations

import math

import pytest
import torch

from mlproject.config import from_dict
from mlproject.errors import ConfigError
from mlproject.model.config import GPTConfig
from mlproject.model.gpt import GPT
from mlproject.training.config import TrainConfig
from mlproject.training.optim import build_optimizer, build_scheduler, lr_factor, resolve_recipe, resolve_warmup


def _lrs(cfg: TrainConfig, total_steps: int) -> list[float]:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    sched = build_scheduler(opt, cfg, total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return lrs


def test_gpt2_recipe_defaults():
    cfg = resolve_recipe(TrainConfig(), "gpt2")
    assert (cfg.beta1, cfg.beta2, cfg.weight_decay, cfg.recipe) == (0.9, 0.999, 0.01, "gpt2")


def test_gpt3_recipe_defaults_follow_the_paper():
    cfg = resolve_recipe(TrainConfig(), "gpt3")
    assert (cfg.beta1, cfg.beta2, cfg.weight_decay, cfg.recipe) == (0.9, 0.95, 0.1, "gpt3")


def test_explicit_recipe_overrides_the_model_version():
    cfg = resolve_recipe(TrainConfig(recipe="gpt3"), "gpt2")
    assert cfg.beta2 == 0.95 and cfg.recipe == "gpt3"


def test_explicit_fields_win_over_the_recipe():
    cfg = resolve_recipe(TrainConfig(weight_decay=0.0, beta2=0.98), "gpt3")
    assert (cfg.weight_decay, cfg.beta2, cfg.beta1) == (0.0, 0.98, 0.9)


def test_optimizer_decays_matrices_but_not_biases_or_norms():
    model = GPT(GPTConfig(n_layer=1, n_head=2, d_model=32, block_size=16, vocab_size=64))
    opt = build_optimizer(model, resolve_recipe(TrainConfig(), "gpt3"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert decay["betas"] == (0.9, 0.95)


def test_build_optimizer_rejects_an_unresolved_config():
    model = GPT(GPTConfig(n_layer=1, n_head=2, d_model=32, block_size=16, vocab_size=64))
    with pytest.raises(ConfigError, match="resolve_recipe"):
        build_optimizer(model, TrainConfig())


@pytest.mark.parametrize(("fields", "total", "expected"), [
    ({"warmup_fraction": 0.1}, 100, 10), ({"warmup_steps": 5}, 100, 5), ({"warmup_fraction": 0.0}, 100, 0),
    ({"warmup_steps": 0}, 100, 0), ({"warmup_fraction": 0.05}, 10, 0), ({}, 100, 5)])
def test_warmup_is_its_steps_or_its_fraction_of_the_run(fields, total, expected):
    assert resolve_warmup(TrainConfig(**fields), total) == expected  # neither set: 5% of the run


@pytest.mark.parametrize(("warmup", "fields"), [(0.1, {"warmup_fraction": 0.1}), (5, {"warmup_steps": 5}),
                                                 (0, {"warmup_fraction": 0.0}), ("2000", {"warmup_steps": 2000})])
def test_the_warmup_of_earlier_releases_is_a_fraction_below_one_else_steps(warmup, fields):
    assert from_dict(TrainConfig, {"warmup": warmup}) == TrainConfig(**fields)


def test_warmup_steps_and_warmup_fraction_together_are_a_one_line_error_naming_both():
    with pytest.raises(ConfigError, match=r"^warmup_steps=10 and warmup_fraction=0.1 are both set; give one"):
        from_dict(TrainConfig, {"warmup_steps": 10, "warmup_fraction": 0.1})
    with pytest.raises(ConfigError, match=r"warmup=100 and warmup_steps=10 are both set"):
        from_dict(TrainConfig, {"warmup": 100, "warmup_steps": 10})


def test_a_warmup_fraction_of_one_or_more_is_refused_naming_warmup_steps():
    with pytest.raises(ConfigError, match=r"warmup_fraction=1.5 must be in \[0, 1\).*warmup_steps"):
        from_dict(TrainConfig, {"warmup_fraction": 1.5})


def test_warmup_longer_than_the_run_is_capped_at_half_of_it():
    assert resolve_warmup(TrainConfig(warmup_steps=2000), 2000) == 1000
    assert resolve_warmup(TrainConfig(warmup_steps=5000), 10) == 5


def test_warmup_as_long_as_the_run_still_decays_to_the_floor():
    cfg = TrainConfig(learning_rate=1e-3, warmup_steps=2000, min_lr_ratio=0.1)
    lrs = _lrs(cfg, 2000)
    assert max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-4)


def test_schedule_endpoints_warmup_peak_and_floor():
    cfg = TrainConfig(learning_rate=1.0, warmup_steps=4, min_lr_ratio=0.1)
    lrs = _lrs(cfg, 20)
    assert lrs[0] == pytest.approx(0.25)  # step 0 trains at 1/warmup of the peak, not at 0
    assert lrs[3] == pytest.approx(1.0)   # the peak on the last warmup step
    assert lrs[-1] == pytest.approx(0.1)  # the floor on the last step
    decay = lrs[3:]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_cosine_midpoint_is_halfway_between_peak_and_floor():
    f = lr_factor(10, warmup_steps=0, total_steps=21, min_lr_ratio=0.2)
    assert f == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 2)))


def test_scheduler_state_restores_its_position():
    cfg = TrainConfig(learning_rate=1.0, warmup_steps=2, min_lr_ratio=0.0)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = build_scheduler(opt, cfg, 10)
    for _ in range(5):
        opt.step()
        sched.step()
    opt2 = torch.optim.AdamW([p], lr=1.0)
    sched2 = build_scheduler(opt2, cfg, 10)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
