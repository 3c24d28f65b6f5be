"""Refuse a compare or ablation whose groups build the same function.

Two configs can differ in their fields and still compute the same function: GPT-3 with
`attention_pattern: dense` (or a single layer, which has no banded layer) is GPT-2; the
attention kernel and activation recomputation change speed and memory, not the outputs. A
sweep over such groups measures seed noise and reports it as an architecture effect (the
original suite's flagship GPT-2 vs GPT-3 comparison did exactly that), so it is refused before
any run is created.
"""

from __future__ import annotations

from typing import Any

from mlproject.config import to_dict
from mlproject.errors import ConfigError
from mlproject.schema import Tag

# Fields that change how a model is computed, not what it computes.
_SAME_FUNCTION = ("attention_impl", "gradient_checkpointing")
# Labels and inputs resolved into other fields (preset -> sizes; version -> pattern, block size).
_LABELS = ("model_version", "preset")


def architecture(model_cfg: Any) -> dict[str, Any]:
    """The function a GPTConfig builds: its resolved fields with labels and no-op settings normalised."""
    cfg = model_cfg.resolved()
    arch = to_dict(cfg)
    for name in (*_LABELS, *_SAME_FUNCTION):
        arch.pop(name)
    if not any(cfg.layer_is_banded(layer) for layer in range(cfg.n_layer)):
        arch["attention_pattern"], arch["attention_window"] = "dense", None  # no layer is banded
    if cfg.pos_encoding != "rope":
        arch["rope_theta"] = None
    if cfg.mlp_type == "swiglu":
        arch["gelu_approximate"] = None
    arch["mlp_hidden"] = cfg.mlp_hidden  # expansion and explicit size resolve to one width
    arch.pop("mlp_expansion")
    arch.pop("mlp_hidden_size")
    return arch


def check_groups_differ(spec: Any) -> None:
    """Raise a one-line ConfigError when two groups of the sweep `spec` build the same function.

    An ablation of a speed axis (attention_impl, gradient_checkpointing) compares the same
    function on purpose (its cost), so it passes.
    """
    from mlproject.research.ablation import SPEED_AXES

    if spec.kind == "ablation" and spec.tags.get(Tag.ABLATION_AXIS) in SPEED_AXES:
        return
    first: dict[str, Any] = {}
    for child in spec.children:
        first.setdefault(child.group, child.cfg)
    seen: dict[str, str] = {}  # architecture key -> group
    for group, cfg in first.items():
        arch = architecture(cfg.model)
        # The data section too: another vocab_size trains another tokenizer, so another function.
        key = repr(sorted(arch.items())) + repr(sorted(to_dict(cfg.data).items()))
        if spec.kind == "ladder":  # an iso-FLOP ladder trains one model to several budgets on purpose
            key += repr(cfg.train.max_steps)
        if key in seen:
            other = seen[key]
            hint = ""
            if {first[other].model.model_version, cfg.model.model_version} == {"gpt2", "gpt3"}:
                hint = ("; gpt3 differs from gpt2 only by its banded layers, so give it attention_pattern "
                        "alternating, n_layer >= 2 and attention_window below block_size (or leave it unset)")
            raise ConfigError(
                f"{spec.kind}: groups {other!r} and {group!r} build the same model (resolved architecture: "
                f"n_layer={arch['n_layer']}, d_model={arch['d_model']}, block_size={arch['block_size']}, "
                f"attention_pattern={arch['attention_pattern']}, attention_window={arch['attention_window']}); "
                f"the sweep would compare a model with itself{hint}")
        seen[key] = group
