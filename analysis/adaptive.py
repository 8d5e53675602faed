"""Which runs would narrow an emergence interval most per FLOP: the estimator and the
greedy choice behind `tinyscale sweep next` (analysis/next_runs.py reads the sweep).

A family (one depth) is its finished runs of one metric: each run's shape (its cell, as
in analysis/emergence.py), log10 N, value, and B prompt-level bootstrap draws of that
value (its prompts resampled). The expected width of the crossing's 95% interval after
adding runs not trained yet is estimated by simulation:

1. S "true curves" are drawn from the current hierarchical bootstrap (logistic fits to
   resamples of the observed cells, their runs and their prompts).
2. In simulation s, each added run's value is curve s at its log10 N plus a seed-to-seed
   deviation N(0, sd_seed^2), clipped to [0, 1]; its B prompt-level draws add
   N(0, sd_prompt^2). sd_seed is the pooled within-shape SD of run values (shapes with
   several seeds); without such shapes, the SD of the cells about the logistic fit (n - 2
   degrees of freedom); never less than sd_prompt, the runs' mean SD of their
   prompt-level draws (a run's value holds its prompts' noise).
3. Each simulation's observed + added runs get the report's bootstrap (cells, runs within
   a cell, prompts within a run), refitted B times (a vectorised Levenberg-Marquardt over
   all S x B problems): the spread, in decades of N, between the 2.5th and 97.5th
   percentiles of the crossings, kept as analysis/emergence.py keeps them. The width is
   that spread, or, where the fitted rise is steeper than the gap between the cells on
   either side of the crossing, that gap if it is wider (`_unresolved`): no cell then
   lies on the rise, the crossing can be anywhere in the gap, and the bootstrap of a few
   cells does not show it (its resamples all land on the same step).
4. The expected width is the mean over the simulations. Every estimate of a family uses
   the same random numbers (indices drawn as floor(u n) from shared uniforms), so
   differences between candidates are what they add, not sampling noise.

The greedy choice: the widest family first; among its candidates that fit the budget
left, the one with the largest (estimate(now) - estimate(with it)) / FLOPs; then the
estimates are updated and it repeats, until no affordable candidate narrows any family
by MIN_GAIN of its width (smaller gains are within the estimator's own noise).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.special import expit

from analysis import emergence

SIMULATIONS = 24
BOOTSTRAP = 200
MIN_GAIN = 0.02  # a run worth less than this share of its family's width is not proposed


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A run that could be trained: its family, shape (the cell it joins), size, cost."""
    name: str
    family: str
    cell: tuple           # emergence.SHAPE values: a known cell gets a seed, else a new one
    params: float
    flops: float
    overrides: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)


@dataclasses.dataclass(eq=False)
class Family:
    """One family's finished runs of `metric`, ready for the estimator."""
    name: str
    metric: str
    threshold: float
    cells: list            # cell keys (emergence.SHAPE values), sorted
    cell_x: np.ndarray     # log10 N per cell
    run_cell: np.ndarray   # each run's cell index
    value: np.ndarray      # each run's value
    draws: np.ndarray      # (BOOTSTRAP, runs): prompt-level bootstrap draws of each value
    _curves: dict = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, name: str, final: pd.DataFrame, metric: str, samples: dict | None,
           threshold: float = 0.5, seed: int = 0) -> Family:
        """From `runs.final` rows of one family (finished runs with `metric`)."""
        g = final.dropna(subset=[metric])
        keys = [k for k in emergence.SHAPE if k in g]
        cells = sorted({tuple(r) for r in g[keys].itertuples(index=False)})
        run_cell = np.array([cells.index(tuple(r)) for r in g[keys].itertuples(index=False)])
        rng = np.random.default_rng(seed)
        draws = np.stack([_prompt_draws(metric, (samples or {}).get(run), value, rng)
                          for run, value in zip(g["run"], g[metric])], axis=1)
        return cls(name, metric, threshold, cells,
                   np.log10([c[keys.index("params")] for c in cells]), run_cell,
                   g[metric].to_numpy(float), draws)

    def cell_means(self) -> np.ndarray:
        return np.array([self.value[self.run_cell == c].mean() for c in range(len(self.cells))])

    @functools.cached_property
    def sd_prompt(self) -> float:
        return float(self.draws.std(axis=0).mean())

    @functools.cached_property
    def sd_seed(self) -> float:
        """The seed-to-seed SD of a run's value (see the module's docstring)."""
        groups = [self.value[self.run_cell == c] for c in range(len(self.cells))]
        multi = [v for v in groups if len(v) > 1]
        if multi:
            dof = sum(len(v) - 1 for v in multi)
            sd = np.sqrt(sum(((v - v.mean()) ** 2).sum() for v in multi) / dof)
        elif len(groups) > 2:
            means = self.cell_means()
            k, x0 = _fit_many(self.cell_x[None], means[None])
            residual = expit(k[:, None] * (self.cell_x - x0[:, None]))[0] - means
            sd = np.sqrt((residual ** 2).sum() / (len(means) - 2))
        else:
            sd = 0.0
        return float(max(sd, self.sd_prompt))  # a run's value holds its prompts' noise

    def curves(self, seed: int):
        """(k, x0) of SIMULATIONS fits drawn from the runs' current bootstrap (None if
        no resample crosses); computed once per seed."""
        if seed not in self._curves:
            self._curves[seed] = self._draw_curves(seed)
        return self._curves[seed]

    def _draw_curves(self, seed: int):
        points, k, x0 = _bootstrap(self.cell_x, self.run_cell, self.draws[None],
                                   self.threshold, (seed, 0))
        valid = np.flatnonzero(np.isfinite(points[0]))
        if not len(valid):
            return None
        curve = np.random.default_rng((seed, 1)).choice(valid, SIMULATIONS)
        return k[0, curve], x0[0, curve]


def _prompt_draws(metric: str, rows, value: float, rng) -> np.ndarray:
    """BOOTSTRAP values of a run with its prompts resampled (its value if it has none)."""
    need = ("consistency", "consistency_chance") if metric == "consistency_above_chance" \
        else (metric,)
    if not rows or not all(k in rows[0] for k in need):
        return np.full(BOOTSTRAP, float(value))
    picks = rng.integers(0, len(rows), (BOOTSTRAP, len(rows)))
    columns = {k: np.array([r[k] for r in rows], float)[picks].mean(axis=1) for k in need}
    if metric == "consistency_above_chance":
        chance = columns["consistency_chance"]
        return np.where(chance < 1, (columns["consistency"] - chance) / (1 - chance), np.nan)
    return columns[metric]


def _fit_many(x: np.ndarray, y: np.ndarray, iterations: int = 40):
    """(k, x0) of least-squares fits y ~ sigmoid(k (x - x0)) of each row: Levenberg-
    Marquardt with a damping per problem, from emergence's start, clipped to its bounds."""
    k = np.full(len(x), 4.0)
    x0 = np.median(x, axis=1)
    damping = np.full(len(x), 1e-3)

    def cost(k, x0):
        return ((expit(k[:, None] * (x - x0[:, None])) - y) ** 2).sum(axis=1)
    current = cost(k, x0)
    stalled = 0
    for _ in range(iterations):
        s = expit(k[:, None] * (x - x0[:, None]))
        r, d = s - y, s * (1 - s)
        jk, jx = d * (x - x0[:, None]), -d * k[:, None]
        a, b, c = (jk * jk).sum(1) * (1 + damping), (jk * jx).sum(1), \
            (jx * jx).sum(1) * (1 + damping)
        gk, gx = (jk * r).sum(1), (jx * r).sum(1)
        det = a * c - b * b
        ok = det > 1e-300
        det = np.where(ok, det, 1.0)
        step_k = np.where(ok, -(c * gk - b * gx) / det, 0.0)
        step_x = np.where(ok, -(a * gx - b * gk) / det, 0.0)
        new_k, new_x0 = k + step_k, x0 + step_x
        trial = cost(new_k, new_x0)
        better = trial < current
        stalled = stalled + 1 if np.all(current - trial < 1e-12) else 0
        if stalled == 3:  # every problem has converged
            break
        k, x0 = np.where(better, new_k, k), np.where(better, new_x0, x0)
        current = np.where(better, trial, current)
        damping = np.where(better, damping / 3, damping * 3)
    return np.clip(k, 0.01, 100), np.clip(x0, -5, 15)


def _picks(stream, n: int, shape) -> np.ndarray:
    """Indices in [0, n) drawn as floor(u n) from uniforms u of `stream`: estimates with
    one run or cell more share the draws of the others (common random numbers)."""
    u = np.random.default_rng(stream).random((*shape, max(n, 16)))[..., :n]
    return np.floor(u * n).astype(int)


def _bootstrap(cell_x, run_cell, draws, threshold, stream):
    """Crossings (log10 N; NaN where a resample is dropped) and fits of the hierarchical
    bootstrap: `draws` (S, B, runs) -> arrays (S, B)."""
    sims, boot, _ = draws.shape
    n_cells = len(cell_x)
    means = np.empty((sims, boot, n_cells))
    for c in range(n_cells):
        members = np.flatnonzero(run_cell == c)
        picks = members[_picks([*stream, 1, c], len(members), (sims, boot))]
        means[:, :, c] = np.take_along_axis(draws, picks, axis=2).mean(axis=2)
    idx = _picks([*stream, 2], n_cells, (sims, boot))
    x = cell_x[idx].reshape(-1, n_cells)
    y = np.take_along_axis(means, idx, axis=2).reshape(-1, n_cells)
    k, x0 = _fit_many(x, y)
    point = x0 + math.log(threshold / (1 - threshold)) / k
    straddles = np.any(y < threshold, axis=1) & np.any(y >= threshold, axis=1)
    inside = (point >= cell_x.min() - 1) & (point <= cell_x.max() + 1)
    point = np.where(straddles & inside & np.isfinite(point), point, np.nan)
    return point.reshape(sims, boot), k.reshape(sims, boot), x0.reshape(sims, boot)


def _width(points: np.ndarray) -> np.ndarray:
    """Per row: the 2.5-97.5 percentile spread of the valid crossings (NaN: < 10 valid)."""
    out = np.full(len(points), np.nan)
    for i, row in enumerate(points):
        row = row[np.isfinite(row)]
        if len(row) >= 10:
            lo, hi = np.percentile(row, [2.5, 97.5])
            out[i] = hi - lo
    return out


def expected_width(family: Family, added: list[Candidate], seed: int = 0) -> float:
    """The expected interval width (decades of N) with the runs `added` (module docstring)."""
    cells, cell_x = list(family.cells), list(family.cell_x)
    added_cell = []
    for c in added:
        if c.cell not in cells:
            cells.append(c.cell)
            cell_x.append(math.log10(c.params))
        added_cell.append(cells.index(c.cell))
    cell_x = np.array(cell_x)
    observed = np.broadcast_to(family.draws, (SIMULATIONS, *family.draws.shape))
    curves = family.curves(seed)
    if curves is None:
        return math.inf
    k, x0 = curves
    draws, values = [observed], [np.broadcast_to(family.value, (SIMULATIONS, len(family.value)))]
    for j, cell in enumerate(added_cell):  # each added run draws from a stream of its own
        rng = np.random.default_rng((seed, 2, j))
        mean = expit(k * (cell_x[cell] - x0))
        value = np.clip(mean + family.sd_seed * rng.standard_normal(SIMULATIONS), 0, 1)
        noise = family.sd_prompt * rng.standard_normal((SIMULATIONS, BOOTSTRAP))
        draws.append(np.clip(value[:, None] + noise, 0, 1)[:, :, None])
        values.append(value[:, None])
    run_cell = np.concatenate([family.run_cell, np.array(added_cell, int)])
    points, _, _ = _bootstrap(cell_x, run_cell, np.concatenate(draws, axis=2),
                              family.threshold, (seed, 3))
    widths = np.maximum(_width(points), _unresolved(cell_x, run_cell,
                                                    np.concatenate(values, axis=1),
                                                    family.threshold))
    return float(np.nanmean(widths)) if np.isfinite(widths).any() else math.inf


def _unresolved(cell_x, run_cell, values, threshold) -> np.ndarray:
    """Per row of run `values`: the gap (decades) between the cells on either side of
    the fitted crossing when the fitted rise (10% to 90%: 2 ln 9 / k decades) is steeper
    than that gap, else 0. No cell lies on such a rise, so the data place the crossing
    anywhere in the gap, however narrow the bootstrap's interval (with few cells, its
    resamples all land on the same step)."""
    means = np.stack([values[:, run_cell == c].mean(axis=1) for c in range(len(cell_x))],
                     axis=1)
    x = np.broadcast_to(cell_x, means.shape)
    k, x0 = _fit_many(x, means)
    point = (x0 + math.log(threshold / (1 - threshold)) / k)[:, None]
    below = np.where((means < threshold) & (x <= point), x, -np.inf).max(axis=1)
    above = np.where((means >= threshold) & (x >= point), x, np.inf).min(axis=1)
    gap = above - below
    return np.where(np.isfinite(gap) & (2 * math.log(9) / k < gap), gap, 0.0)


@dataclasses.dataclass
class Pick:
    candidate: Candidate
    width_after: float    # its family's expected width (decades) after this pick and earlier ones


def select(families: dict[str, Family],
           candidates: Callable[[list[Candidate]], list[Candidate]], budget: float,
           max_picks: int | None = None, seed: int = 0,
           min_gain: float = MIN_GAIN) -> list[Pick]:
    """The greedy choice (module docstring). `candidates(chosen)`: what could be
    trained next, given the runs chosen so far; `min_gain`: the smallest share of a
    family's width a run must be expected to take off."""
    chosen: list[Pick] = []
    spent = 0.0
    expected = {name: expected_width(f, [], seed) for name, f in families.items()}
    while max_picks is None or len(chosen) < max_picks:
        options = candidates([p.candidate for p in chosen])
        best = None
        for name in sorted(families, key=lambda f: -expected[f]):
            added = [p.candidate for p in chosen if p.candidate.family == name]
            now = expected[name]
            scored = [((now - expected_width(families[name], added + [c], seed)) / c.flops, c)
                      for c in options if c.family == name and spent + c.flops <= budget]
            scored = [s for s in scored if s[0] > 0 and s[0] * s[1].flops >= min_gain * now]
            if scored:
                gain, best = max(scored, key=lambda s: s[0])
                after = now - gain * best.flops
                break
        if best is None:
            break
        expected[best.family] = after
        chosen.append(Pick(best, expected[best.family]))
        spent += best.flops
    return chosen
