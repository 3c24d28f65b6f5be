"""`python -m benchmarks`: every performance figure of the project in one table.

    python -m benchmarks                 # the full suite (about 10 minutes on 2 cores)
    python -m benchmarks --quick         # tiny sizes, a smoke run of every figure (seconds)
    python -m benchmarks --json          # machine-readable output on stdout
    python -m benchmarks --only train    # one group: train, generate, trainer

See benchmarks/README.md for what each figure means and the latest results.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from benchmarks.harness import FULL, QUICK, Figure, Settings, format_table, machine, to_json
from mlproject.training.device import configure_backends

GROUPS = ("train", "generate", "trainer")


def run(groups: tuple[str, ...], settings: Settings) -> list[Figure]:
    """The figures of `groups`, in the suite's order."""
    figures: list[Figure] = []
    if "train" in groups:
        from benchmarks.training import bench_training

        figures += bench_training(settings)
    if "generate" in groups:
        from benchmarks.generation import bench_generation

        figures += bench_generation(settings)
    if "trainer" in groups:
        from benchmarks.trainer_loop import bench_trainer_loop

        figures += bench_trainer_loop(settings)
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions: checks that it runs")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--only", choices=GROUPS, action="append", help="run only this group (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the peers are built from configs, never downloaded
    if args.threads:
        torch.set_num_threads(args.threads)
    configure_backends(torch.device("cpu"))  # the trainer's CPU settings, for every side alike
    settings = QUICK if args.quick else FULL
    info = {"machine": machine(), "settings": vars(settings), "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    t0 = time.perf_counter()
    figures = run(tuple(args.only or GROUPS), settings)
    info["elapsed_sec"] = round(time.perf_counter() - t0, 1)
    info["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(to_json(figures, info))
    else:
        m = info["machine"]
        print(f"{info['date']}: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
              f"torch {m['torch']}; load {m['load_avg_1m']} -> {info['load_avg_1m_end']}; "
              f"{info['elapsed_sec']:.0f} s")
        print(format_table(figures))
        passed = sum(f.passed for f in figures)
        print(f"{passed} of {len(figures)} figures pass" + ("" if passed == len(figures) else
              "; below target: " + ", ".join(f.key for f in figures if not f.passed)) +
              (" (quick sizes: not the targets' sizes)" if settings.quick else ""))
    return 0 if settings.quick or all(f.passed for f in figures) else 1  # quick sizes are not the targets' sizes


if __name__ == "__main__":
    sys.exit(main())
