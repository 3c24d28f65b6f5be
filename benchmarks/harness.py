"""The suite's shared pieces: interleaved timing, the `Figure` record, the machine, the table.

Every figure compares two measurements taken in the same process, in alternating order, so a
slow drift of a shared machine (other processes, thermal throttling) hits both sides alike and
cancels in their ratio. Reported values are medians over the timed repetitions.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from mlproject.training.throughput import cpu_name


@dataclass
class Settings:
    """How long to measure: untimed warm-up work, then `repeats` timed rounds of `steps` each."""

    quick: bool
    warmup: int
    repeats: int
    steps: int


FULL = Settings(quick=False, warmup=2, repeats=5, steps=2)
QUICK = Settings(quick=True, warmup=1, repeats=2, steps=1)


@dataclass
class Figure:
    """One line of the table: `ours` against `peer`, their ratio, and the target for it.

    `ratio` is ours / peer. For rates (tokens/s) higher is better and the target is a floor
    (`at_least=True`); for shares (data time / step time) it is a ceiling.
    """

    key: str
    name: str
    unit: str
    ours: float
    peer: float
    target: float
    at_least: bool = True
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.peer if self.peer else float("nan")

    @property
    def passed(self) -> bool:
        return self.ratio >= self.target if self.at_least else self.ratio < self.target

    @property
    def target_text(self) -> str:
        return f"{'>=' if self.at_least else '<'} {self.target:g}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "target": self.target_text, "passed": self.passed}


def interleaved(sides: Mapping[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """`repeats` results of each side, the order rotating every round (A B C, B C A, ...)."""
    names = list(sides)
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(sides[name]())
    return results


def seconds_per_call(fn: Callable[[], object], calls: int) -> float:
    """Wall-clock seconds per call of `fn`, over `calls` calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, torch threads and version, and the load now."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def _number(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def format_table(figures: list[Figure]) -> str:
    """A fixed-width text table: figure, ours, peer, ratio, target, pass/fail."""
    header = ("figure", "ours", "peer", "ratio", "target", "result")
    rows = [header] + [(f.name, f"{_number(f.ours)} {f.unit}", f"{_number(f.peer)} {f.unit}", f"{f.ratio:.3f}",
                        f.target_text, "pass" if f.passed else "FAIL") for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"note: {f.key}: {f.note}" for f in figures if f.note]
    return "\n".join(lines)


def to_json(figures: list[Figure], info: dict[str, Any]) -> str:
    return json.dumps({**info, "figures": [f.to_dict() for f in figures]}, indent=1)
