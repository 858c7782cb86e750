"""Power laws Q = (β·X)^α fitted to scaling measurements, as VAR's section 5.2 fits them: least squares of log Q on
log X with X in raw counts (parameters, FLOPs), the Pearson r of (log X, log Q), the Pareto frontier of loss
curves over compute, and the variant with an irreducible term, Q = Q∞ + (β·X)^α. Plain arrays in and out, so
that anyone can fit their own numbers; numpy and scipy only."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import NextscaleError


@dataclass(frozen=True)
class PowerLaw:
    """Q = q_inf + (beta·X)^alpha, fitted to `n` points; `r` is Pearson's r of (log X, log(Q − q_inf))."""

    alpha: float
    beta: float
    r: float
    n: int
    q_inf: float = 0.0

    def __call__(self, x):
        with np.errstate(divide="ignore", over="ignore"):  # a law fitted to flat data can have β of 0 or ∞
            return self.q_inf + (self.beta * np.asarray(x, dtype=float)) ** self.alpha

    def to_dict(self) -> dict:
        return asdict(self)

    def equation(self, x_name: str = "X", q_name: str = "Q") -> str:
        floor = f"{self.q_inf:.3g} + " if self.q_inf else ""
        return f"{q_name} = {floor}({self.beta:.3g}·{x_name})^{self.alpha:.3g}, r = {self.r:.4f}"


def _points(x, q, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, q = np.asarray(x, dtype=float).ravel(), np.asarray(q, dtype=float).ravel()
    if x.shape != q.shape:
        raise NextscaleError(f"{what}: {x.size} x values but {q.size} measurements")
    if x.size < 2:
        raise NextscaleError(f"{what}: a power law needs at least 2 points, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(q)) and np.all(x > 0) and np.all(q > 0)):
        raise NextscaleError(f"{what}: every x and every measurement must be positive and finite")
    return x, q


def fit_power_law(x, q, *, q_inf: float = 0.0, what: str = "fit") -> PowerLaw:
    """Q = q_inf + (β·X)^α by least squares of log(Q − q_inf) on log X (q_inf given: 0 for the plain law)."""
    x, q = _points(x, q, what)
    if np.any(q <= q_inf):
        raise NextscaleError(f"{what}: the irreducible term {q_inf:g} is not below every measurement (min {q.min():g})")
    lx, lq = np.log(x), np.log(q - q_inf)
    alpha, intercept = np.polyfit(lx, lq, 1)
    r = float(np.corrcoef(lx, lq)[0, 1]) if np.ptp(lx) > 0 and np.ptp(lq) > 0 else float("nan")
    return PowerLaw(float(alpha), float(np.exp(intercept / alpha)), r, int(x.size), float(q_inf))


def fit_with_irreducible(x, q, *, q_inf: float | None = None, what: str = "fit") -> PowerLaw:
    """Q = Q∞ + (β·X)^α: Q∞ given, or fitted (the value in [0, min Q) whose power-law fit of Q − Q∞ leaves the
    least squared error in log space)."""
    from scipy.optimize import minimize_scalar

    x, q = _points(x, q, what)
    if q_inf is not None:
        return fit_power_law(x, q, q_inf=q_inf, what=what)
    lx = np.log(x)

    def residual(floor: float) -> float:
        lq = np.log(q - floor)
        slope, intercept = np.polyfit(lx, lq, 1)
        return float(np.sum((lq - slope * lx - intercept) ** 2))

    # The error is not unimodal in Q∞: a grid dense near min Q (where Q − Q∞ spans decades) finds the basin,
    # then a bounded search between the grid's neighbours refines it.
    grid = np.concatenate([[0.0], q.min() * (1 - np.geomspace(1.0, 1e-9, 400))[1:]])
    errors = [residual(floor) for floor in grid]
    i = int(np.argmin(errors))
    low, high = grid[max(0, i - 1)], grid[min(len(grid) - 1, i + 1)]
    best = minimize_scalar(residual, bounds=(low, high), method="bounded", options={"xatol": 1e-12 * q.min()})
    floor = float(best.x) if best.fun <= errors[i] else float(grid[i])
    return fit_power_law(x, q, q_inf=floor, what=what)


def pareto_frontier(flops, q) -> np.ndarray:
    """Indices of the points on the compute frontier, by increasing compute: a point is on it when no point with
    less or equal compute has a lower Q. Points at zero compute are left out."""
    flops, q = np.asarray(flops, dtype=float).ravel(), np.asarray(q, dtype=float).ravel()
    keep = []
    for i in np.flatnonzero(flops > 0):
        rivals = (flops <= flops[i]) & (flops > 0)
        if not np.any(q[rivals] < q[i]):
            keep.append(i)
    return np.array(sorted(keep, key=lambda i: (flops[i], q[i])), dtype=int)
