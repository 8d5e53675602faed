"""Token budgets: L(N, D) on a sweep's own runs, IsoFLOP curves, the compute-optimal frontier.

Whenever the finished runs hold >= 2 token budgets for each of >= 3 sizes (the branches of
wsd runs, tinyscale/train/branches.py, or separate runs), L(N, D) = E + A/N^alpha + B/D^beta is
fitted to every (N, D, final held-out loss) point with `analysis.fit.fit_chinchilla`
(bootstrap intervals over the points).

Compute is counted as the runs count it, C = f(N) x D with f the training FLOPs per token
of tinyscale/model/counting.py, which at this scale is far from 6N (attention over the sequence
and the output layer weigh as much as the blocks). Over the sweep's shapes f is fitted as
a power law, f = k N^gamma (log-log least squares), so on an IsoFLOP curve
D = C / (k N^gamma) and the loss-minimising size is, exactly,

    N_opt(C) = (alpha A C^beta / (gamma beta B k^beta)) ^ (1 / (alpha + gamma beta)),

N_opt proportional to C^a with a = beta / (alpha + gamma beta) (Chinchilla's beta/(alpha+beta)
when f = 6N). Intervals on N_opt and a: the same formula on every bootstrap fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from analysis import fit as fit_lib

MIN_SIZES, MIN_BUDGETS, MIN_POINTS = 3, 2, 7  # 5 parameters (+ 2); 2 sizes leave alpha free


@dataclasses.dataclass
class Budgets:
    fit: fit_lib.Fit
    points: pd.DataFrame        # run, params, tokens, eval_loss, flops, trained_flops
    k: float                    # FLOPs per token = k N^gamma over the sweep's shapes
    gamma: float
    table: pd.DataFrame         # the fitted parameters with 95% intervals
    frontier: pd.DataFrame      # C, N_opt (95%), D_opt, tokens per parameter
    flops_trained: float        # FLOPs the finished points cost, as trained (branches:
    flops_separately: float     # their cool-downs) and as separate runs would

    @property
    def saved(self) -> float:
        return 1.0 - self.flops_trained / self.flops_separately

    def exponent(self, p: dict) -> float:
        """a of N_opt ~ C^a for the fitted parameters `p`."""
        return p["beta"] / (p["alpha"] + self.gamma * p["beta"])

    def n_opt(self, p: dict, compute) -> np.ndarray:
        """In logs: a bootstrap fit of a few points can hold an A of 1e100."""
        with np.errstate(divide="ignore", invalid="ignore"):
            log_n = (np.log(p["alpha"] * p["A"]) - np.log(self.gamma * p["beta"] * p["B"])
                     - p["beta"] * np.log(self.k) + p["beta"] * np.log(compute)) / (
                p["alpha"] + self.gamma * p["beta"])
            return np.exp(log_n)

    def loss_at(self, p: dict, params_n, compute) -> np.ndarray:
        """The fitted loss of a model of N parameters trained with `compute` FLOPs."""
        n = np.asarray(params_n, float)
        d = np.asarray(compute, float) / (self.k * n ** self.gamma)
        return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]

    def statement(self) -> str:
        f, sizes = self.fit, self.points["params"].nunique()
        per = self.points.groupby("params")["tokens"].nunique()
        unknown = [k for k in ("alpha", "beta") if k in f.not_identified]
        if unknown:  # a is made of both exponents
            a_text = "a not identified (" + " and ".join(
                {"alpha": "α", "beta": "β"}[k] for k in unknown) + " not identified)"
        else:
            samples = [self.exponent(s) for s in f.samples]
            a_text = f"a = {self.exponent(f.params):.3g}" + (
                " ({:.3g}–{:.3g})".format(*np.percentile(samples, [2.5, 97.5]))
                if samples else "")
        return (f"L(N, D) fitted to {f.n_points} points ({sizes} sizes, {per.min()}–{per.max()} "
                f"token budgets each): α: {f.describe('alpha')}; β: {f.describe('beta')}; "
                f"E: {f.describe('E')} (nats); compute-optimal N ∝ C^a with {a_text} (FLOPs "
                f"per token ∝ N^{self.gamma:.2f} over these shapes). The optimizer "
                f"{f.convergence.describe()}. The points cost "
                f"{self.flops_trained:.3g} FLOPs as trained; trained separately they would "
                f"cost {self.flops_separately:.3g} ({self.saved:.0%} saved).")


def points(final: pd.DataFrame) -> pd.DataFrame:
    """The (N, D, loss) points: every finished run and branch with a held-out loss."""
    keep = ["run", "params", "tokens", "eval_loss", "flops", "trained_flops",
            "flops_per_token", "branch_of"]
    out = final[np.isfinite(final["eval_loss"].astype(float))]  # a NaN or inf: no point
    return out[[c for c in keep if c in out]].reset_index(drop=True)


def enough(pts: pd.DataFrame) -> bool:
    """>= MIN_BUDGETS token budgets for >= MIN_SIZES sizes, and >= MIN_POINTS points."""
    if len(pts) < MIN_POINTS:
        return False
    budgets = pts.groupby("params")["tokens"].nunique()
    return int((budgets >= MIN_BUDGETS).sum()) >= MIN_SIZES


def compute(final: pd.DataFrame, bootstrap: int = 300) -> Budgets | None:
    """The L(N, D) analysis of the finished runs, or None when they hold too few budgets."""
    pts = points(final)
    if not enough(pts):
        return None
    try:
        result = fit_lib.fit_chinchilla(pts["params"], pts["tokens"], pts["eval_loss"],
                                        bootstrap=bootstrap)
    except FloatingPointError:  # diverged from every start: no fit to report
        return None
    shapes = pts.drop_duplicates("params")
    if len(shapes) >= 2:
        gamma, log_k = np.polyfit(np.log(shapes["params"]), np.log(shapes["flops_per_token"]), 1)
    else:
        gamma, log_k = 1.0, np.log(shapes["flops_per_token"].iloc[0] / shapes["params"].iloc[0])
    trained = pts["trained_flops"].fillna(pts["flops"]).sum()
    b = Budgets(result, pts, float(np.exp(log_k)), float(gamma), pd.DataFrame(),
                pd.DataFrame(), float(trained), float(pts["flops"].sum()))
    b.table = pd.DataFrame([{
        "parameter": k, "fit": f"not identified: {result.not_identified[k]}"
        if k in result.not_identified else f"{result.params[k]:.4g}",
        "95% interval": "{:.3g}–{:.3g}".format(*result.intervals[k])
        if k in result.intervals else "–"} for k in result.params])
    compute_grid = np.geomspace(pts["flops"].min(), pts["flops"].max() * 10, 6)
    rows = []
    for c in compute_grid:
        n = float(b.n_opt(result.params, c))
        band = [x for x in (float(b.n_opt(s, c)) for s in result.samples) if np.isfinite(x)]
        lo, hi = np.percentile(band, [2.5, 97.5]) if band else (np.nan, np.nan)
        d = c / (b.k * n ** b.gamma)
        rows.append({"compute (FLOPs)": c, "N_opt": n, "N_opt 2.5%": lo, "N_opt 97.5%": hi,
                     "D_opt (tokens)": d, "tokens per parameter": d / n,
                     "loss at optimum": float(b.loss_at(result.params, n, c))})
    b.frontier = pd.DataFrame(rows)
    return b
