"""Scaling-law fits with uncertainty: `L(C) = E + A * C^(-alpha)` against compute, bootstrapped over seeds.

The fit is a variable projection (Golub and Pereyra, 1973): for a fixed alpha the model is
linear in (E, A), so they are solved in closed form (least squares of L on C^-alpha) and only
alpha is searched: a log-spaced grid brackets the minimum of the profiled sum of squares, then
scipy's elementwise minimiser (`scipy.optimize.elementwise.find_minimum`, Chandrupatla's
bracketing search) refines every bracket at once. A bootstrap's 1,000 resamples share the
compute values (seeds of a rung train the same FLOPs), so all of them are fitted in one
vectorised pass.

A fit that does not converge is a status, never an exception: the minimum at a bound of
alpha (`alpha_at_bound`), a non-positive A (`nonpositive_A`: the metric does not fall with
compute), non-finite numbers (`nonfinite`) or too few points (`too_few_points`).

The uncertainty comes from seeds: the bootstrap resamples the seeds within each rung (the same
draws for every group, so paired seeds stay paired), and reports percentile 95% intervals.
Chinchilla's iso-FLOP analysis (Hoffmann et al., 2022, approach 2) is here too: per compute
budget a parabola in log N gives the loss-minimising size, and log N_opt against log C gives
the exponent a of N_opt ∝ C^a.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

ALPHA_BOUNDS = (0.005, 3.0)   # the search range of alpha; a minimum at either end did not converge
_GRID = 64                    # log-spaced alphas that bracket the minimum
MIN_BOOTSTRAP = 1000


class FitStatus:
    """Why a fit is (not) usable; values of `PowerLawFit.status`."""

    OK = "ok"
    ALPHA_AT_BOUND = "alpha_at_bound"
    NONPOSITIVE_A = "nonpositive_A"
    NONFINITE = "nonfinite"
    TOO_FEW_POINTS = "too_few_points"
    NO_MINIMUM = "no_minimum"          # an iso-FLOP parabola that opens downward


@dataclass(frozen=True)
class PowerLawFit:
    """`L(C) = E + A * C^(-alpha)` fitted to points, its status and residuals (measured - fitted)."""

    status: str
    E: float
    A: float
    alpha: float
    residuals: list[float] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return self.status == FitStatus.OK

    def predict(self, compute: float | np.ndarray) -> float | np.ndarray:
        return self.E + self.A * np.power(compute, -self.alpha)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# ----------------------------------------------------------------------------- the fit

def _profile(alpha: np.ndarray, z_log: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E, A, SSE) of the least-squares line y = E + A * z with z = exp(-alpha * z_log), row by row.

    alpha (B,), z_log (n,) = log(C / C_ref), y (B, n)."""
    z = np.exp(-alpha[:, None] * z_log[None, :])
    zm, ym = z.mean(axis=1, keepdims=True), y.mean(axis=1, keepdims=True)
    dz, dy = z - zm, y - ym
    szz = (dz * dz).sum(axis=1)
    slope = np.where(szz > 0, (dz * dy).sum(axis=1) / np.where(szz > 0, szz, 1.0), np.nan)
    intercept = ym[:, 0] - slope * zm[:, 0]
    sse = ((dy - slope[:, None] * dz) ** 2).sum(axis=1)
    return intercept, slope, sse


def fit_many(compute: Sequence[float], metrics: np.ndarray,
             bounds: tuple[float, float] = ALPHA_BOUNDS) -> list[PowerLawFit]:
    """One fit per row of `metrics` (B, n), all against the same `compute` (n,)."""
    from scipy.optimize import elementwise

    c = np.asarray(compute, dtype=float)
    y = np.atleast_2d(np.asarray(metrics, dtype=float))
    if c.size < 3 or len(np.unique(c)) < 3:
        return [PowerLawFit(FitStatus.TOO_FEW_POINTS, math.nan, math.nan, math.nan) for _ in y]
    if not (np.all(np.isfinite(c)) and np.all(c > 0)):
        return [PowerLawFit(FitStatus.NONFINITE, math.nan, math.nan, math.nan) for _ in y]
    log_ref = float(np.mean(np.log(c)))
    z_log = np.log(c) - log_ref  # C / C_ref near 1: C^-alpha stays well scaled for any compute range
    grid = np.geomspace(*bounds, _GRID)
    sse = np.stack([_profile(np.full(len(y), a), z_log, y)[2] for a in grid], axis=1)  # (B, grid)
    best = np.nan_to_num(sse, nan=np.inf).argmin(axis=1)
    inner = np.clip(best, 1, _GRID - 2)
    rows = np.arange(len(y), dtype=float)

    def objective(alpha: np.ndarray, row: np.ndarray) -> np.ndarray:
        shape = alpha.shape
        out = _profile(alpha.ravel(), z_log, y[row.ravel().astype(int)])[2]
        return np.nan_to_num(out, nan=np.inf).reshape(shape)

    res = elementwise.find_minimum(objective, (grid[inner - 1], grid[inner], grid[inner + 1]), args=(rows,),
                                   tolerances={"xatol": 1e-7, "xrtol": 1e-7})
    alpha = np.where(best == inner, res.x, grid[best])
    intercept, slope, _ = _profile(alpha, z_log, y)
    fits = []
    for i in range(len(y)):
        E, A_ref, a = float(intercept[i]), float(slope[i]), float(alpha[i])
        A = A_ref * math.exp(a * log_ref) if math.isfinite(A_ref) else math.nan
        at_bound = best[i] != inner[i] or not (bounds[0] * 1.001 < a < bounds[1] / 1.001)
        status = (FitStatus.NONFINITE if not all(map(math.isfinite, (E, A, a))) else
                  FitStatus.ALPHA_AT_BOUND if at_bound else
                  FitStatus.NONPOSITIVE_A if A_ref <= 0 else FitStatus.OK)
        residuals = (y[i] - (E + A_ref * np.exp(-a * z_log))).tolist() if status != FitStatus.NONFINITE else []
        fits.append(PowerLawFit(status, E, A, a, residuals))
    return fits


def fit_power_law(compute: Sequence[float], metric: Sequence[float],
                  bounds: tuple[float, float] = ALPHA_BOUNDS) -> PowerLawFit:
    """`L(C) = E + A * C^(-alpha)` by least squares; a status says whether it converged."""
    values = np.asarray(metric, dtype=float)
    if values.size != len(compute):
        raise ValueError(f"fit_power_law: {len(compute)} compute values but {values.size} metric values")
    if not np.all(np.isfinite(values)):
        return PowerLawFit(FitStatus.NONFINITE, math.nan, math.nan, math.nan)
    return fit_many(compute, values[None, :], bounds)[0]


# ----------------------------------------------------------------------------- the bootstrap

@dataclass(frozen=True)
class Points:
    """One group's ladder: per rung its compute and the metric of each seed (seeds in a fixed order)."""

    compute: list[float]              # per rung (FLOPs of one child)
    values: list[dict[int, float]]    # per rung: seed -> metric

    def flat(self) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(compute per point, metric per point, rung of each point), seeds in sorted order."""
        c, y, rung = [], [], []
        for i, (ci, by_seed) in enumerate(zip(self.compute, self.values)):
            for seed in sorted(by_seed):
                c.append(ci)
                y.append(by_seed[seed])
                rung.append(i)
        return np.asarray(c, float), np.asarray(y, float), rung


def resample_indices(seed_counts: Sequence[int], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, sum(seed_counts)) indices into the flattened points: seeds resampled within each rung."""
    columns, start = [], 0
    for k in seed_counts:
        columns.append(start + rng.integers(0, k, size=(n_boot, k)))
        start += k
    return np.concatenate(columns, axis=1) if columns else np.zeros((n_boot, 0), dtype=int)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def percentile_interval(estimate: float, draws: np.ndarray, level: float = 0.95) -> Interval:
    """The estimate with the percentile interval of its finite bootstrap draws (NaN without any)."""
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return Interval(estimate, math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high))


@dataclass
class BootstrapFit:
    """A group's fit, its parameters' 95% intervals and the bootstrap fits behind them."""

    fit: PowerLawFit
    E: Interval
    A: Interval
    alpha: Interval
    n_boot: int
    n_failed: int                    # resamples whose fit did not converge (left out of the intervals)
    draws: dict[str, np.ndarray]     # "E", "A", "alpha": one value per resample (NaN where it failed)

    def predict_draws(self, compute: float) -> np.ndarray:
        return self.draws["E"] + self.draws["A"] * np.power(compute, -self.draws["alpha"])

    def summary(self) -> dict[str, object]:
        return {"status": self.fit.status, "E": self.E.as_dict(), "A": self.A.as_dict(),
                "alpha": self.alpha.as_dict(), "n_boot": self.n_boot, "n_failed": self.n_failed,
                "residuals": self.fit.residuals}


def bootstrap_fit(points: Points, indices: np.ndarray, level: float = 0.95) -> BootstrapFit:
    """The fit to every point and to each resample of seeds (`indices` from `resample_indices`)."""
    c, y, _ = points.flat()
    fit = fit_power_law(c, y)
    boot = fit_many(c, y[indices]) if np.all(np.isfinite(y)) else []
    ok = [f.converged for f in boot]
    draws = {name: np.array([getattr(f, name) if good else np.nan for f, good in zip(boot, ok)])
             for name in ("E", "A", "alpha")}
    intervals = {name: percentile_interval(getattr(fit, name), draws[name], level) for name in draws}
    return BootstrapFit(fit, intervals["E"], intervals["A"], intervals["alpha"], n_boot=len(indices),
                        n_failed=len(ok) - sum(ok), draws=draws)


def within_rung_variance(points: Points) -> float:
    """Pooled variance of the metric across seeds within a rung (NaN with no rung of 2 seeds)."""
    num, dof = 0.0, 0
    for by_seed in points.values:
        v = np.asarray(list(by_seed.values()), float)
        if v.size > 1:
            num += float(((v - v.mean()) ** 2).sum())
            dof += v.size - 1
    return num / dof if dof else math.nan


def prediction_interval(bfit: BootstrapFit, compute: float, n_seeds: int, seed_variance: float,
                        rng: np.random.Generator, level: float = 0.95) -> Interval:
    """Where the mean of `n_seeds` new seeds at `compute` should fall: the fit's uncertainty
    (bootstrap predictions) plus the seed noise of that mean (normal, pooled within-rung variance)."""
    draws = bfit.predict_draws(compute)
    noise_sd = math.sqrt(seed_variance / max(1, n_seeds)) if math.isfinite(seed_variance) else 0.0
    draws = draws + rng.normal(0.0, noise_sd, size=draws.shape)
    return percentile_interval(float(bfit.fit.predict(compute)), draws, level)


def compute_needed(E: np.ndarray | float, A: np.ndarray | float, alpha: np.ndarray | float,
                   loss: np.ndarray | float) -> np.ndarray:
    """The compute at which `E + A C^-alpha` reaches `loss` (inf when loss <= E: never)."""
    E, A, alpha, loss = map(np.asarray, (E, A, alpha, loss))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.power((loss - E) / A, -1.0 / alpha)
    return np.where(loss > E, out, np.inf)


def compute_multiplier(base: BootstrapFit, other: BootstrapFit, at_compute: float,
                       level: float = 0.95) -> Interval:
    """How many times `at_compute` the baseline needs to reach the other group's loss at `at_compute`
    (above 1: the other group is better), with its bootstrap interval (paired resamples)."""
    def multiplier(b: Mapping[str, np.ndarray | float], o: Mapping[str, np.ndarray | float]) -> np.ndarray:
        target = o["E"] + o["A"] * np.power(at_compute, -np.asarray(o["alpha"]))
        return compute_needed(b["E"], b["A"], b["alpha"], target) / at_compute

    point = float(multiplier(asdict(base.fit), asdict(other.fit)))
    draws = multiplier(base.draws, other.draws)
    return percentile_interval(point, np.where(np.isinf(draws), np.nan, draws), level)


def alpha_difference(base: BootstrapFit, other: BootstrapFit, level: float = 0.95) -> Interval:
    """alpha(other) - alpha(baseline) with its bootstrap interval (paired resamples)."""
    return percentile_interval(other.fit.alpha - base.fit.alpha, other.draws["alpha"] - base.draws["alpha"], level)


# ----------------------------------------------------------------------------- iso-FLOP profiles

@dataclass(frozen=True)
class IsoFlopProfile:
    """One compute budget: the parabola `L = a (log N)^2 + b log N + c` and its minimising size."""

    compute: float
    coefficients: tuple[float, float, float]
    n_opt: float                     # NaN when the parabola opens downward (no minimum)
    status: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def iso_flop_optimum(sizes: Sequence[float], metric: Sequence[float], compute: float = math.nan) -> IsoFlopProfile:
    """The loss-minimising size of one budget from a parabola in log N (at least 3 sizes)."""
    n = np.log(np.asarray(sizes, float))
    y = np.asarray(metric, float)
    if len(np.unique(n)) < 3 or not np.all(np.isfinite(y)):
        return IsoFlopProfile(compute, (math.nan,) * 3, math.nan, FitStatus.TOO_FEW_POINTS)
    a, b, c = (float(v) for v in np.polyfit(n, y, 2))
    if a <= 0:
        return IsoFlopProfile(compute, (a, b, c), math.nan, FitStatus.NO_MINIMUM)
    return IsoFlopProfile(compute, (a, b, c), math.exp(-b / (2 * a)), FitStatus.OK)


def optimum_exponent(budgets: Sequence[float], n_opts: Sequence[float]) -> float:
    """a of N_opt ∝ C^a: the slope of log N_opt on log C (NaN with fewer than 2 finite optima)."""
    c, n = np.log(np.asarray(budgets, float)), np.log(np.asarray(n_opts, float))
    ok = np.isfinite(c) & np.isfinite(n)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(c[ok], n[ok], 1)[0])
