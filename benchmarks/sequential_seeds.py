"""The decision rule for adding seeds, simulated alone (no training): error rates and seeds used.

    python -m benchmarks.sequential_seeds            # 10,000 null sweeps and 10,000 with an effect
    python -m benchmarks.sequential_seeds --json     # the same figures as JSON

Each simulated sweep is a list of paired differences (candidate - baseline) drawn from a normal
distribution with sd 1: mean 0 for a null sweep, mean `--effect` (in sd units) for one with a
true effect. `research.sequential.evaluate` takes its looks (seeds from `--start` to
`--max-seeds` in `--looks` rounds) exactly as a sweep does. Printed: the type I error against
alpha plus its Monte Carlo error, the power, the mean number of seeds used, and the seeds a
fixed design needs for the same power (statsmodels' paired t power). The uncalibrated design
(normal-theory boundaries used on t statistics) is shown beside it. Seeded; seconds to run.
The exit status is 1 when the type I error exceeds alpha plus twice its Monte Carlo error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from mlproject.research.power import seeds_for
from mlproject.research.sequential import SequentialDesign, design, evaluate


def simulate(plan: SequentialDesign, effect: float, sweeps: int, rng: np.random.Generator) -> dict[str, float]:
    """Share of sweeps that decided (either way) and mean seeds used, over `sweeps` sweeps."""
    decided = used = wrong_sign = 0
    for _ in range(sweeps):
        state = evaluate(plan, rng.normal(-effect, 1.0, plan.max_seeds).tolist())  # lower loss: better
        decided += state.verdict in ("better", "worse")
        wrong_sign += effect != 0 and state.verdict == "worse"
        used += state.looks[-1].n
    return {"decided": decided / sweeps, "mean_seeds": used / sweeps, "wrong_sign": wrong_sign / sweeps}


def run(start: int, max_seeds: int, looks: int, alpha: float, effect: float, sweeps: int, seed: int) -> dict:
    t0 = time.perf_counter()
    plan = design(start, max_seeds, looks, alpha)
    normal = design(start, max_seeds, looks, alpha, calibrate=False)
    rng = np.random.default_rng(seed)
    null, alt = simulate(plan, 0.0, sweeps, rng), simulate(plan, effect, sweeps, rng)
    null_uncalibrated = simulate(normal, 0.0, sweeps, rng)
    mc_error = math.sqrt(alpha * (1 - alpha) / sweeps)
    power = alt["decided"] - alt["wrong_sign"]  # "better" on a truly better candidate
    return {"design": {"seeds": plan.seeds, "alpha": alpha, "spending_alpha": plan.spending_alpha,
                       "boundaries": [round(b, 3) for b in plan.boundaries],
                       "uncalibrated_boundaries": [round(b, 3) for b in normal.boundaries]},
            "sweeps": sweeps, "effect_sd": effect, "seed": seed,
            "type1_error": null["decided"], "mc_error": mc_error, "type1_ok": null["decided"] <= alpha + 2 * mc_error,
            "type1_error_uncalibrated": null_uncalibrated["decided"],
            "power": power, "mean_seeds_null": null["mean_seeds"], "mean_seeds_effect": alt["mean_seeds"],
            "fixed_seeds_same_power": seeds_for(effect, alpha, power) if 0 < power < 1 else None,
            "elapsed_sec": round(time.perf_counter() - t0, 1)}


def report(r: dict) -> str:
    d = r["design"]
    fixed = r["fixed_seeds_same_power"]
    lines = [
        f"design: looks at {', '.join(map(str, d['seeds']))} seeds, Lan-DeMets O'Brien-Fleming, two-sided "
        f"alpha {d['alpha']:g} (spent at {d['spending_alpha']:.4f} after the small-sample calibration)",
        f"boundaries |z|: {', '.join(f'{b:.3f}' for b in d['boundaries'])} "
        f"(uncalibrated: {', '.join(f'{b:.3f}' for b in d['uncalibrated_boundaries'])})",
        f"{r['sweeps']:,} null sweeps: type I error {r['type1_error']:.4f} (alpha {d['alpha']:g}, MC error "
        f"{r['mc_error']:.4f}: {'ok' if r['type1_ok'] else 'TOO HIGH'}); uncalibrated "
        f"{r['type1_error_uncalibrated']:.4f}; mean seeds used {r['mean_seeds_null']:.2f}",
        f"{r['sweeps']:,} sweeps with a true effect of {r['effect_sd']:g} sd: power {r['power']:.4f}, "
        f"mean seeds used {r['mean_seeds_effect']:.2f}",
    ]
    if fixed:
        lines.append(f"a fixed design with the same power needs {fixed} seeds: the sequential design uses "
                     f"{1 - r['mean_seeds_effect'] / fixed:.0%} fewer under the effect "
                     f"({r['mean_seeds_null'] / fixed:.2f}x as many under the null)")
    lines.append(f"{r['elapsed_sec']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sequential_seeds", description=__doc__.split("\n\n")[0])
    p.add_argument("--start", type=int, default=3, help="seeds at the first look")
    p.add_argument("--max-seeds", type=int, default=15, help="seeds at the last look (--adaptive-seeds MAX)")
    p.add_argument("--looks", type=int, default=5, help="looks, fixed in advance")
    p.add_argument("--alpha", type=float, default=0.05, help="overall two-sided type I error")
    p.add_argument("--effect", type=float, default=0.8, help="true mean difference in sd units of the differences")
    p.add_argument("--sweeps", type=int, default=10_000, help="simulated sweeps per scenario")
    p.add_argument("--seed", type=int, default=12345, help="seed of the simulation")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    r = run(args.start, args.max_seeds, args.looks, args.alpha, args.effect, args.sweeps, args.seed)
    print(json.dumps(r, indent=1) if args.json else report(r))
    return 0 if r["type1_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
