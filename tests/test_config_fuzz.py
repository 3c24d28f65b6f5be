"""A fuzz pass over the config loader: random YAML, random types per field, random flags.

Every case must end in a valid config or a one-line `MlprojectError` (argparse's own usage
errors: exit code 2) — never another exception. The pass is bounded by a case count and a
time budget; the number of cases run and the outcomes are printed (`pytest -s`).
"""

from __future__ import annotations

import dataclasses
import random
import time
import typing
from pathlib import Path

import pytest
import yaml

from mlproject.cli import build_parser
from mlproject.config import _hints
from mlproject.errors import MlprojectError
from mlproject.research.compare import CompareJob
from mlproject.research.config import CompareConfig
from mlproject.app.config import RunConfig

CASES = 3000
BUDGET_SEC = 90.0
SECTIONS = {**RunConfig.SECTIONS, "compare": CompareConfig}
SPECIAL = ["", " ", "null", "~", "true", "no", "1e309", "-0", "nan", "inf", "-1", "0", "2**63", "9" * 40,
           "gpt2", "gpt3", "pydocs", "nano", "bf16", "auto", "\x00", "é", "💥", "{a: 1}", "[1, 2]", "- x",
           "--max-steps", "-1e-3", "1_000", "0x10", "01", ".5", "1.", "1e3", "  7  ", "sdpa", "rope"]


def random_scalar(rng: random.Random):
    kind = rng.randrange(9)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randint(-10**6, 10**6)
    if kind == 2:
        return rng.choice([0, 1, -1, 2**63, -2**64, 10**30])
    if kind == 3:
        return rng.choice([0.0, -0.0, 1e-9, -1e-3, 0.5, 1.5, 1e308, float("inf"), float("-inf"), float("nan")])
    if kind == 4:
        return rng.choice(SPECIAL)
    if kind == 5:
        return "".join(rng.choice("abc019 -_.:/\\@%{}[],#&*!|>'\"") for _ in range(rng.randrange(12)))
    if kind == 6:
        return [random_scalar(rng) for _ in range(rng.randrange(4))]
    if kind == 7:
        return {random_key(rng): random_scalar(rng) for _ in range(rng.randrange(3))}
    return rng.random() * rng.choice([1, 100, 1e6])


def random_key(rng: random.Random, cls: type | None = None):
    if cls is not None and rng.random() < 0.8:
        name = rng.choice([f.name for f in dataclasses.fields(cls)])
        return name.replace("_", "-") if rng.random() < 0.2 else name
    return rng.choice(["x", "model", "n_layer", "", "max-steps", 3, None, True, 1.5, "Ω", "per_model"])


def typed_value(rng: random.Random, tp):
    """A value of the field's own type most of the time (so cases reach validation), else anything."""
    if rng.random() < 0.35:
        return random_scalar(rng)
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin is typing.Literal:
        return rng.choice(typing.get_args(tp))
    if origin is list:
        return [typed_value(rng, args[0] if args else str) for _ in range(rng.randrange(4))]
    if args:
        return typed_value(rng, rng.choice(args)) if rng.random() < 0.9 else None
    if tp is bool:
        return rng.choice([True, False, "true", "off"])
    if tp is int:
        return rng.choice([0, 1, 2, 4, 8, 32, 64, -3, 10**9])
    if tp is float:
        return rng.choice([0.0, 0.1, 0.5, 1.0, 3e-4, -1.0, 2.0])
    return rng.choice(["pydocs", "gpt2", "x", "", "runs", "/nonexistent/path"])


def random_document(rng: random.Random):
    if rng.random() < 0.08:
        return random_scalar(rng)  # not even a mapping
    doc = {}
    for name, cls in SECTIONS.items():
        if rng.random() < 0.3:
            continue
        if rng.random() < 0.05:
            doc[name] = random_scalar(rng)
            continue
        hints = _hints(cls)
        section = {}
        for _ in range(rng.randrange(6)):
            key = random_key(rng, cls)
            section[key] = typed_value(rng, hints[key]) if key in hints else random_scalar(rng)
        doc[name] = section
    if rng.random() < 0.1:
        doc[random_key(rng)] = random_scalar(rng)
    return doc


def random_text(rng: random.Random) -> bytes:
    """YAML text: dumped documents, mangled dumps, raw bytes (non-UTF-8 too)."""
    r = rng.random()
    if r < 0.7:
        return yaml.safe_dump(random_document(rng), allow_unicode=True).encode()
    text = yaml.safe_dump(random_document(rng)).encode()
    if r < 0.85 and text:
        i = rng.randrange(len(text))
        return text[:i] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6))) + text[i:]
    return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))


def random_flags(rng: random.Random) -> list[str]:
    argv = []
    for _ in range(rng.randrange(6)):
        cls = rng.choice(list(SECTIONS.values()))
        f = rng.choice(dataclasses.fields(cls))
        argv.append(f"--{f.name.replace('_', rng.choice(['-', '_']))}")
        for _ in range(rng.choice([0, 1, 1, 1, 2])):
            value = typed_value(rng, _hints(cls)[f.name])
            argv.append(str(value) if not isinstance(value, list) else " ".join(map(str, value)))
    if rng.random() < 0.1:
        argv.append(rng.choice(["--nope", "-x", "--", "--config"]))
    return argv


def one_case(rng: random.Random, tmp: Path, parser) -> str:
    """Run one case; return 'valid', 'error' or 'usage' (argparse). Anything else propagates."""
    command = rng.choice(["train", "compare"])
    path = tmp / "fuzz.yaml"
    path.write_bytes(random_text(rng))
    argv = [command, "--config", str(path)] if rng.random() < 0.8 else [command]
    argv += random_flags(rng) if rng.random() < 0.6 else []
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 2
        return "usage"
    try:
        if command == "train":
            RunConfig.load(args.config, args)
        else:
            CompareJob.load(args.config, args)
    except MlprojectError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"not one line: {message!r}"
        return "error"
    return "valid"


def test_random_configs_give_a_valid_config_or_a_one_line_error(tmp_path, capsys):
    rng = random.Random(20261201)
    parser = build_parser()
    outcomes = {"valid": 0, "error": 0, "usage": 0}
    start = time.monotonic()
    for case in range(CASES):
        if time.monotonic() - start > BUDGET_SEC:
            break
        state = rng.getstate()
        try:
            with _quiet(capsys):
                outcomes[one_case(rng, tmp_path, parser)] += 1
        except Exception as exc:
            rng.setstate(state)
            raise AssertionError(f"case {case}: {type(exc).__name__}: {exc} on {(tmp_path / 'fuzz.yaml').read_bytes()[:300]!r}") from exc
    ran = sum(outcomes.values())
    with capsys.disabled():
        print(f"\nconfig fuzz: {ran} cases in {time.monotonic() - start:.1f} s: {outcomes}")
    assert ran >= min(CASES, 500)
    assert outcomes["valid"] > 0 and outcomes["error"] > 0  # both sides of the loader were reached


class _quiet:
    """argparse prints usage errors to stderr; keep the test output readable."""

    def __init__(self, capsys: pytest.CaptureFixture) -> None:
        self.capsys = capsys

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        self.capsys.readouterr()
