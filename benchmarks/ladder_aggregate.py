"""The ladder's aggregate stage on a synthetic ladder (no training, no tracking store).

    python -m benchmarks.ladder_aggregate                     # 6 rungs x 3 groups x 5 seeds, 1,000 resamples
    python -m benchmarks.ladder_aggregate --rungs 8 --groups 4 --seeds 8 --repeats 5 --json

The rows of a results table are drawn from known laws `L(C) = E + A C^-alpha` plus seed noise;
`research.ladder_report.analyze_ladder` then computes everything the aggregate stage does
(per-rung statistics with Holm, the bootstrap fits of every group, the compute multipliers,
the held-out prediction intervals) and `research.ladder_plots.ladder_charts` draws the charts.
Printed: the median wall time of each part over `--repeats` rounds. The store's own work (reading
the children's runs, logging metrics and files) is not in it: it is what any sweep's aggregate
costs. Seeded; no figure here is asserted by a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlproject.research.ladder_plots import ladder_charts
from mlproject.research.ladder_report import analyze_ladder
from mlproject.research.ladder_summary import ladder_metrics


def synthetic_ladder(rungs: int, groups: int, seeds: int, bootstrap: int, rng: np.random.Generator
                     ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A design and its rows: group g follows 2 + 80 (1 - 0.05 g) C^-0.2, seed noise sd 0.01."""
    names = [f"g{i}" for i in range(groups)]
    rung_names = [f"r{i}" for i in range(rungs)]
    cells, rows = [], []
    for i, group in enumerate(names):
        for j, rung in enumerate(rung_names):
            compute = 1e9 * 3 ** j
            cells.append({"label": f"{group}@{rung}", "group": group, "rung": rung, "budget": None,
                          "params": 1000 * 2 ** j, "flops_per_token": 1000, "tokens": compute / 1000, "steps": 1})
            for seed in range(seeds):
                value = 2.0 + 80.0 * (1 - 0.05 * i) * compute ** -0.2 + rng.normal(0, 0.01)
                rows.append({"group": f"{group}@{rung}", "seed": seed, "status": "FINISHED", "flops": compute,
                             "val_bpb_best": float(value)})
    design = {"mode": "tokens", "groups": names, "rungs": rung_names, "budgets": [], "holdout": 1,
              "metric": "val_bpb_best", "bootstrap": bootstrap, "bootstrap_seed": 0, "alpha": 0.05, "axis": None,
              "cells": cells}
    return design, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ladder_aggregate", description=__doc__.split("\n\n")[0])
    p.add_argument("--rungs", type=int, default=6)
    p.add_argument("--groups", type=int, default=3)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    design, rows = synthetic_ladder(args.rungs, args.groups, args.seeds, args.bootstrap, np.random.default_rng(0))
    fits, charts = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        analysis = analyze_ladder(design, rows)
        metrics = ladder_metrics(analysis)
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            ladder_charts(analysis, Path(tmp), title="benchmark")
        t2 = time.perf_counter()
        fits.append(t1 - t0)
        charts.append(t2 - t1)
    result = {"rungs": args.rungs, "groups": args.groups, "seeds": args.seeds, "children": len(rows),
              "bootstrap": args.bootstrap, "metrics_logged": len(metrics),
              "converged": sum(f.fit.converged for f in analysis.fits.values()),
              "statistics_and_fits_sec": round(statistics.median(fits), 3),
              "charts_sec": round(statistics.median(charts), 3),
              "total_sec": round(statistics.median(f + c for f, c in zip(fits, charts)), 3)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
