"""Prediction checks: every fit, refitted without its largest size, predicts what it did
not see, and the report says whether the measurement falls inside the prediction's 95%
interval (the refit's bootstrap).

* L(N) of each depth family (analysis/report.py): without every run of the largest N;
* L(N, D) (analysis/budgets.py): without the points of the largest compute C = 6ND, one
  row per held-out (N, D);
* emergence (analysis/emergence.py, each crossing found): the logistic in log10 N
  refitted without the largest-N cell predicts that cell's value (the metric as the
  crossing reads it: continuous metrics min-max scaled), its interval from the same
  hierarchical bootstrap (cells, seeds, prompts) over the cells left.

A fit left with fewer points than its parameters + 2 is a row that says so. Also here:
the families the L(N) fits are made for, and their headline table, where a parameter the
data do not identify reads "not identified: <reason>" (analysis/fit.py), never a number.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy.special import expit

from analysis import emergence
from analysis import fit as fit_lib

L_N_PARAMS, L_ND_PARAMS, LOGISTIC_PARAMS = 3, 5, 2


@dataclasses.dataclass
class Check:
    fit: str                        # which fit: "L(N), all", "L(N, D)", "emergence: ..."
    held_out: str                   # what was held out
    measured: float
    predicted: float | None = None
    interval: tuple | None = None   # the prediction's 95% bootstrap interval
    note: str = ""                  # why there is no prediction, or what to know of it

    @property
    def inside(self) -> bool | None:
        if self.interval is None or self.predicted is None:
            return None
        return bool(self.interval[0] <= self.measured <= self.interval[1])


def families(final: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(name, finished runs with a held-out loss) of each L(N) family: all runs, then each
    depth; with one depth, only 'all'."""
    final = final[np.isfinite(final["eval_loss"].astype(float))] if "eval_loss" in final \
        else final.iloc[:0]
    groups = [("all", final)] + [(f"depth {d}", g) for d, g in final.groupby("depth")]
    return groups[:1] if len(groups) == 2 else groups


def fit_rows(final: pd.DataFrame, fits: dict) -> pd.DataFrame:
    """The L(N) headline table: per family its runs, each parameter with its 95% interval
    or 'not identified: <reason>', and how the optimizer converged."""
    rows = []
    for name, g in families(final):
        f = fits.get(name)
        if g.empty:
            continue
        if f is None:
            few = (f"not identified: {len(g)} runs for {L_N_PARAMS} parameters "
                   f"({L_N_PARAMS + 2} needed)")
            rows.append({"family": name, "runs": len(g), "E": few, "A": few, "α": few,
                         "optimizer": "not fitted"})
            continue
        rows.append({"family": name, "runs": f.n_points, "E": f.describe("E"),
                     "A": f.describe("A"), "α": f.describe("alpha"),
                     "optimizer": f.convergence.describe()})
    return pd.DataFrame(rows)


def _interval(samples, bootstrap) -> tuple | None:
    samples = np.asarray(samples, float)
    samples = samples[np.isfinite(samples)]
    return tuple(np.percentile(samples, [2.5, 97.5])) if bootstrap and samples.size else None


def _refit_note(refit: fit_lib.Fit) -> str:
    names = {"alpha": "α", "beta": "β"}
    if refit.identified:
        return ""
    return "refit: " + ", ".join(names.get(k, k) for k in refit.not_identified) + \
        " not identified"


def power_law(name: str, params_n, loss, bootstrap: int) -> Check:
    """L(N) refitted without the runs of the largest N predicts their mean loss."""
    n, y = np.asarray(params_n, float), np.asarray(loss, float)
    largest = n.max()
    keep = n < largest
    held = int((~keep).sum())
    check = Check(f"L(N), {name}", f"N = {largest:,.0f} ({held} run{'s' * (held > 1)})",
                  float(y[~keep].mean()))
    if keep.sum() < L_N_PARAMS + 2:
        check.note = (f"too few points left: {keep.sum()} without the largest size, "
                      f"{L_N_PARAMS + 2} needed")
        return check
    refit = fit_lib.fit_power_law(n[keep], y[keep], bootstrap=bootstrap)
    check.predicted = float(refit.predict(largest))
    check.interval = _interval(refit.predict_samples(largest), bootstrap)
    check.note = _refit_note(refit)
    return check


def chinchilla(params_n, tokens_d, loss, bootstrap: int) -> list[Check]:
    """L(N, D) refitted without the points of the largest C = 6ND predicts each held-out
    (N, D) (the mean loss of its runs)."""
    n, d, y = (np.asarray(v, float) for v in (params_n, tokens_d, loss))
    compute = 6 * n * d
    held = compute >= compute.max() * (1 - 1e-9)
    cells = sorted({(a, b) for a, b in zip(n[held], d[held])})
    checks = [Check("L(N, D)", f"C = 6ND = {6 * a * b:.3g} (N = {a:,.0f}, D = {b:,.0f})",
                    float(y[held & (n == a) & (d == b)].mean())) for a, b in cells]
    if (~held).sum() < L_ND_PARAMS + 2:
        for c in checks:
            c.note = (f"too few points left: {(~held).sum()} without the largest compute, "
                      f"{L_ND_PARAMS + 2} needed")
        return checks
    refit = fit_lib.fit_chinchilla(n[~held], d[~held], y[~held], bootstrap=bootstrap)
    for c, (a, b) in zip(checks, cells):
        c.predicted = float(refit.predict(a, b))
        c.interval = _interval(refit.predict_samples(a, b), bootstrap)
        c.note = _refit_note(refit)
    return checks


def _sigmoid(k, x0, x):
    return expit(k * (x - x0))


def logistic(name: str, params, values, bootstrap: int, resample=None,
             seed: int = 0) -> Check:
    """The logistic in log10 N refitted without the largest-N cell predicts its value;
    `resample(rng)` redraws every cell's value (emergence.cells), else cells only."""
    x, y = np.log10(np.asarray(params, float)), np.asarray(values, float)
    held = int(np.argmax(x))
    keep = np.arange(len(x)) != held
    check = Check(f"emergence: {name}", f"N = {10 ** x[held]:,.0f} (its cell)",
                  float(y[held]))
    if keep.sum() < LOGISTIC_PARAMS + 2:
        check.note = (f"too few cells left: {keep.sum()} without the largest N, "
                      f"{LOGISTIC_PARAMS + 2} needed")
        return check
    xs, ys = x[keep], y[keep]
    check.predicted = float(_sigmoid(*emergence._logistic_fit(xs, ys), x[held]))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        redrawn = ys if resample is None else np.asarray(resample(rng), float)[keep]
        idx = rng.integers(0, len(xs), len(xs))
        if len(np.unique(xs[idx])) >= LOGISTIC_PARAMS:
            draws.append(_sigmoid(*emergence._logistic_fit(xs[idx], redrawn[idx]), x[held]))
    check.interval = _interval(draws, bootstrap)
    return check


def emergence_checks(final: pd.DataFrame, crossings: list, bootstrap: int,
                     samples: dict | None = None) -> list[Check]:
    """A check per emergence fit the report states (each crossing found), each fit once
    (a family that is all the runs is listed under two names)."""
    groups = {"all depths": final, **{f"depth {d}": g for d, g in final.groupby("depth")}}
    out, seen = [], set()
    for c in crossings:
        g = groups.get(c.family)
        if c.status != "crossed" or g is None or (c.metric, tuple(g.index)) in seen:
            continue
        seen.add((c.metric, tuple(g.index)))
        if c.metric in emergence.CONTINUOUS:
            values = emergence.scaled(final[c.metric], emergence.CONTINUOUS[c.metric]
                                      ).loc[g.index]
            label = f"{c.metric} (scaled), {c.family}"
            params, value, resample = emergence.cells(g, c.metric, values, None)
        else:
            label = f"{c.metric}, {c.family}"
            params, value, resample = emergence.cells(g, c.metric, g[c.metric], samples)
        out.append(logistic(label, params, value, bootstrap, resample))
    return out


def checks(final: pd.DataFrame, budget_points: pd.DataFrame | None, crossings: list,
           bootstrap: int, samples: dict | None = None) -> list[Check]:
    """Every prediction check of a report: L(N) per family, L(N, D), emergence."""
    out = [power_law(name, g["params"], g["eval_loss"], bootstrap)
           for name, g in families(final) if g["params"].nunique() > 1]
    if budget_points is not None:
        out += chinchilla(budget_points["params"], budget_points["tokens"],
                          budget_points["eval_loss"], bootstrap)
    return out + emergence_checks(final, crossings, bootstrap, samples)


def table(checks: list[Check]) -> pd.DataFrame:
    """fit, held-out size, predicted, 95% interval, measured, inside?, note."""
    return pd.DataFrame([{
        "fit": c.fit, "held out": c.held_out,
        "predicted": c.predicted if c.predicted is not None else np.nan,
        "95% interval": "{:.3g}–{:.3g}".format(*c.interval) if c.interval else "–",
        "measured": c.measured,
        "inside?": {True: "yes", False: "no", None: "–"}[c.inside], "note": c.note}
        for c in checks], columns=["fit", "held out", "predicted", "95% interval",
                                   "measured", "inside?", "note"])


def summary(table: pd.DataFrame) -> str:
    """One sentence from the checks' table: how many measurements fell inside their
    interval, how many fits could not predict."""
    if table.empty:
        return "No fit to check: the report states no fit."
    judged = table[table["inside?"] != "–"]
    unpredicted = table[table["predicted"].isna()]
    parts = []
    if len(judged):
        parts.append(f"{(judged['inside?'] == 'yes').sum()} of {len(judged)} held-out "
                     "measurements fall inside their prediction's 95% interval")
    if len(unpredicted):
        parts.append(f"{len(unpredicted)} of {len(table)} checks have too few points left "
                     "to predict")
    rest = len(table) - len(judged) - len(unpredicted)
    if rest:
        parts.append(f"{rest} predictions have no interval (no bootstrap)")
    return "; ".join(parts) + "."
