"""Emergence: where a metric crosses a threshold, as a function of parameters.

For each depth family, a logistic curve m(x) = sigmoid(k (x - x0)) in x = log10 N is
fitted to a metric in [0, 1] (least squares); the crossing of `threshold` is
x0 + logit(threshold) / k. Its 95% interval is a hierarchical bootstrap: the shapes
(cells) are resampled, within each cell its runs (seeds), and within each run its
prompts (from samples.jsonl), so the interval holds the seed-to-seed spread as well as
the prompt-to-prompt one. A family whose runs all
lie below (or all above) the threshold is reported as censored — "not reached below N"
or "already above at N" — never as an extrapolated number. Continuous metrics (loss,
fluency) get the same treatment after a min-max scaling, so a reader can compare a
sharp emergence with a smooth one (Schaeffer et al., 2023).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.special import expit

from tinyscale.evals.coherence import above_chance


@dataclasses.dataclass
class Crossing:
    family: str
    metric: str
    status: str                 # crossed | not_reached | already_above | unclear | too_few
    params: float | None        # N at the crossing
    interval: tuple | None      # 95% bootstrap interval of N
    bound: float | None         # for censored families: the largest / smallest N tried

    def describe(self) -> str:
        if self.status == "crossed":
            lo, hi = self.interval or (np.nan, np.nan)
            return f"{self.params:,.0f} parameters (95% interval {lo:,.0f} to {hi:,.0f})"
        if self.status == "not_reached":
            return f"not reached below {self.bound:,.0f} parameters"
        if self.status == "already_above":
            return f"already above at {self.bound:,.0f} parameters"
        if self.status == "unclear":
            return "no crossing inside the range of runs (the metric is not monotone in N)"
        return "too few runs to fit"


def _logistic_fit(x, y):
    def residual(theta):
        k, x0 = theta
        return expit(k * (x - x0)) - y

    def jacobian(theta):  # analytic: a third of the time went to finite differences
        k, x0 = theta
        s = expit(k * (x - x0))  # no overflow warning far from the crossing
        return np.stack([s * (1 - s) * (x - x0), -s * (1 - s) * k], axis=1)
    start = [4.0, float(np.median(x))]
    k, x0 = least_squares(residual, start, jac=jacobian, method="lm").x  # MINPACK: fast
    if 0.01 <= k <= 100 and -5 <= x0 <= 15:
        return np.array([k, x0])
    # a step-like or falling metric: the bounded fit (steepest 100 per decade)
    return least_squares(residual, start, jac=jacobian, bounds=([0.01, -5], [100, 15])).x


def log_crossing(x, y, threshold: float) -> float | None:
    """log10 N where the logistic fit to (x = log10 N, y) crosses `threshold`; None when
    the values do not straddle it or the fit crosses outside the range (+-1 decade)."""
    if not (np.any(y < threshold) and np.any(y >= threshold)):
        return None
    k, x0 = _logistic_fit(x, y)
    point = x0 + np.log(threshold / (1 - threshold)) / k
    return float(point) if x.min() - 1 <= point <= x.max() + 1 else None


def crossing(params_n, values, threshold: float = 0.5, family: str = "all",
             metric: str = "", bootstrap: int = 500, seed: int = 0,
             resample=None) -> Crossing:
    """Where `values` (in [0, 1], rising with N; one per cell) crosses `threshold`.
    `resample(rng)` draws the cells' values again from their runs and prompts (the
    hierarchical levels); without it only the cells are resampled."""
    n, y = np.asarray(params_n, float), np.asarray(values, float)
    keep = np.isfinite(n) & np.isfinite(y)
    n, y = n[keep], y[keep]
    if len(n) < 2:
        return Crossing(family, metric, "too_few", None, None, None)
    if np.all(y < threshold):
        return Crossing(family, metric, "not_reached", None, None, float(n.max()))
    if np.all(y >= threshold):
        return Crossing(family, metric, "already_above", None, None, float(n.min()))
    x = np.log10(n)
    logit = np.log(threshold / (1 - threshold))

    def cross(xs, ys):
        k, x0 = _logistic_fit(xs, ys)
        return x0 + logit / k

    point = cross(x, y)
    if not x.min() <= point <= x.max():  # a non-monotone metric: no crossing in range
        return Crossing(family, metric, "unclear", None, None, None)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(x), len(x))
        ys = y if resample is None else np.asarray(resample(rng), float)[keep]
        if np.any(ys[idx] < threshold) and np.any(ys[idx] >= threshold):
            samples.append(cross(x[idx], ys[idx]))
    samples = [v for v in samples if x.min() - 1 <= v <= x.max() + 1]
    interval = tuple(10 ** np.percentile(samples, [2.5, 97.5])) if samples else None
    return Crossing(family, metric, "crossed", float(10 ** point), interval, None)


CONTINUOUS = {"eval_loss": False, "fluency": True}  # metric: higher is better


def scaled(values: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """Min-max scale a continuous metric to [0, 1] (loss: lower is better), keeping the
    rows' labels (callers pick a family's rows by them)."""
    v = np.asarray(values, float)
    lo, hi = np.nanmin(v), np.nanmax(v)
    out = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    return pd.Series(out if higher_is_better else 1 - out, index=values.index)


SHAPE = ("depth", "width", "heads", "params")  # runs that differ only in seed share a cell


def run_value(metric: str, rows: list[dict]) -> float:
    """A run's value of `metric` from its per-prompt rows (samples.jsonl)."""
    if metric == "consistency_above_chance":
        return above_chance(np.mean([r["consistency"] for r in rows]),
                            np.mean([r["consistency_chance"] for r in rows]))
    return float(np.mean([r[metric] for r in rows]))


def _has_rows(metric: str, rows) -> bool:
    need = ("consistency", "consistency_chance") if metric == "consistency_above_chance" \
        else (metric,)
    return bool(rows) and all(k in rows[0] for k in need)


def cells(g, metric: str, values, samples: dict | None):
    """(params per cell, value per cell, resampler): a cell's value is the mean over its
    runs; the resampler draws runs within each cell and prompts within each run."""
    g = g.assign(_value=np.asarray(values, float))
    if "run" not in g:
        g = g.assign(run=g.index.astype(str))
    groups = [c for _, c in g.groupby([k for k in SHAPE if k in g], sort=True)]
    params = np.array([c["params"].iloc[0] for c in groups], float)
    value = np.array([c["_value"].mean() for c in groups], float)
    per_run = [[(v, (samples or {}).get(r)) for r, v in zip(c["run"], c["_value"])]
               for c in groups]

    def resample(rng):
        out = []
        for runs in per_run:
            picked = [runs[i] for i in rng.integers(0, len(runs), len(runs))]
            draws = []
            for v, rows in picked:
                if _has_rows(metric, rows):
                    rows = [rows[i] for i in rng.integers(0, len(rows), len(rows))]
                    v = run_value(metric, rows)
                draws.append(v)
            out.append(np.mean(draws))
        return out
    return params, value, resample


def seeds_per_cell(final) -> dict:
    """{runs per cell: number of cells}: how many seeds each point of the report has."""
    if final.empty:
        return {}
    sizes = final.groupby([k for k in SHAPE if k in final]).size()
    return {int(k): int(v) for k, v in sizes.value_counts().sort_index().items()}


def table(final, metrics, threshold: float = 0.5, bootstrap: int = 500,
          samples: dict | None = None) -> list[Crossing]:
    """Crossings of each metric for each depth family and for all runs together.

    `final` is `runs.final(df)`; continuous metrics (eval_loss, fluency) are scaled.
    `samples`: {run: its per-prompt rows}, for the prompt level of the bootstrap.
    """
    out = []
    groups = [("all depths", final)] + [(f"depth {d}", g) for d, g in final.groupby("depth")]
    same = groups.pop()[0] if len(groups) == 2 else None  # one depth: it is all the runs
    for metric in metrics:
        if metric not in final:
            continue
        for family, g in groups:
            values = g[metric]
            if metric in CONTINUOUS:
                values = scaled(final[metric], CONTINUOUS[metric]).loc[g.index]
                params, value, resample = cells(g, metric, values, None)
            else:
                params, value, resample = cells(g, metric, values, samples)
            out.append(crossing(params, value, threshold, family, metric, bootstrap,
                                resample=resample))
            if same:  # fitted once, listed under both names
                out.append(dataclasses.replace(out[-1], family=same))
    return out
