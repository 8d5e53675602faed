"""One block against deep stacks: at matched parameter counts (nearest neighbours), and
from fitted curves (the difference between the depth families' emergence points, with a
hierarchical bootstrap interval over shapes, seeds and prompts)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import emergence

METRICS = ("eval_loss", "grammar", "consistency", "completion", "coherence")


def matched_pairs(final: pd.DataFrame, tolerance: float = 1.5,
                  by: str = "params_non_embedding") -> pd.DataFrame:
    """Each deeper run paired with the depth-1 run of its architecture closest in `by`
    (non-embedding parameters; `params_active` for a mixture's active ones), within a
    factor `tolerance`, of the same seed where that shape has one, with the differences
    deep - one and their intervals."""
    if "architecture" in final and final["architecture"].nunique() > 1:
        parts = [matched_pairs(g.drop(columns="architecture"), tolerance, by).assign(
            architecture=arch) for arch, g in final.groupby("architecture")]
        parts = [p for p in parts if not p.empty]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    one, deep = final[final["depth"] == 1], final[final["depth"] > 1]
    rows = []
    for _, d in deep.iterrows():
        if one.empty:
            break
        ratio = np.abs(np.log(one[by] / d[by]))
        if ratio.min() > np.log(tolerance):
            continue
        closest = one[ratio == ratio.min()]  # the depth-1 shape's runs: its seeds
        same_seed = closest[closest["seed"] == d["seed"]] if "seed" in one else closest
        o = (same_seed if len(same_seed) else closest).iloc[0]  # seed with seed
        rows.append({"deep": d["run"], "one_block": o["run"], "depth": d["depth"],
                     "params_deep": d[by], "params_one": o[by], **differences(d, o)})
    return pd.DataFrame(rows)


def differences(a: pd.Series, b: pd.Series) -> dict:
    """{metric_diff: a - b, metric_ci: half-width of its 95% interval} for two runs."""
    row = {}
    for m in METRICS:
        if m in a and m in b:
            # held-out loss: its standard error over held-out sequences (runs from
            # before it was recorded have none: their interval stays unknown)
            se = np.hypot(a.get(f"{m}_se", np.nan), b.get(f"{m}_se", np.nan))
            row[f"{m}_diff"] = a[m] - b[m]
            row[f"{m}_ci"] = 1.96 * se
    return row


def statement(pairs: pd.DataFrame) -> str:
    """What this sweep shows, in one paragraph (whichever way it goes)."""
    if pairs.empty:
        return ("No depth-1 and deeper runs have matched parameter counts in this sweep, so "
                "it cannot compare one block with deep stacks.")
    parts, verdicts = [], []
    for m, better in (("eval_loss", "lower"), ("grammar", "higher"),
                      ("consistency", "higher"), ("coherence", "higher")):
        if f"{m}_diff" not in pairs:
            continue
        diff, ci = pairs[f"{m}_diff"], pairs[f"{m}_ci"]
        sign = -1 if m == "eval_loss" else 1
        name = m.replace("_", " ")
        if ci.isna().all():
            better_count = int(((sign * diff) > 0).sum())
            parts.append(f"{name}: deeper is better in {better_count} of "
                         f"{len(pairs)} pairs (mean difference {diff.mean():+.3f}, {better} is "
                         "better; no interval)")
            verdicts.append(f"{name}, no verdict (no interval)")
            continue
        wins = int(((sign * diff) > ci).sum())
        losses = int(((sign * diff) < -ci).sum())
        parts.append(f"{name}: deeper is significantly better in {wins}, "
                     f"worse in {losses}, indistinguishable in {len(pairs) - wins - losses} of "
                     f"{len(pairs)} pairs (mean difference {diff.mean():+.3f}, {better} is "
                     "better)")
        verdicts.append(verdict(name, wins, losses, len(pairs)))
    return ("At matched non-embedding parameters (deeper run vs the closest depth-1 run): "
            + "; ".join(parts) + ". Verdict of this sweep: for " + "; for ".join(verdicts)
            + ".")


def verdict(name: str, wins: int, losses: int, pairs: int) -> str:
    """Which way `name` goes for deeper stacks, from the pairs whose interval excludes 0:
    a direction only when most pairs take it and at most half as many the other way."""
    split = f"{wins} favour depth, {losses} one block, {pairs - wins - losses} neither"
    if wins > pairs / 2 and losses * 2 <= wins:
        return f"{name}, deeper is better ({wins} of {pairs} pairs, {losses} worse)"
    if losses > pairs / 2 and wins * 2 <= losses:
        return f"{name}, one block is better ({losses} of {pairs} pairs, {wins} worse)"
    if not wins and not losses:
        return f"{name}, it cannot tell them apart (no pair differs beyond its interval)"
    if wins + losses <= pairs / 2:
        return f"{name}, mostly indistinguishable ({split})"
    return f"{name}, the pairs disagree ({split})"


def curve_differences(final: pd.DataFrame, metrics, threshold: float = 0.5,
                      bootstrap: int = 300, samples: dict | None = None,
                      seed: int = 0, by: str = "depth", baseline=1) -> pd.DataFrame:
    """For each metric and each family k of column `by` other than `baseline` (depth k >
    1 against depth 1; a data setting against the plain corpus): the ratio N_k / N_1 of
    the parameters at which family k and the baseline cross `threshold` (below 1: family
    k gets there with fewer parameters), its 95% bootstrap interval and a verdict."""
    families = dict(tuple(final.groupby(by)))
    if baseline not in families:
        return pd.DataFrame()
    name = (lambda k: f"depth {k}") if by == "depth" else str
    rows = []
    for metric in metrics:
        if metric not in final:
            continue
        prepared = {}
        for depth, g in families.items():
            values = g[metric] if metric not in emergence.CONTINUOUS else emergence.scaled(
                final[metric], emergence.CONTINUOUS[metric]).loc[g.index]
            params, value, resample = emergence.cells(g, metric, values, samples)
            prepared[depth] = (np.log10(params), value, resample)
        x1, y1, r1 = prepared[baseline]
        for depth, (xk, yk, rk) in sorted(prepared.items()):
            if depth == baseline:
                continue
            a, b = emergence.log_crossing(x1, y1, threshold), \
                emergence.log_crossing(xk, yk, threshold)
            row = {"metric": metric, by: depth, "N_k / N_1": np.nan,
                   "95% interval": "", "verdict": "cannot tell: a family does not cross"}
            if a is not None and b is not None:
                rng, diffs = np.random.default_rng(seed), []
                for _ in range(bootstrap):
                    i1 = rng.integers(0, len(x1), len(x1))
                    ik = rng.integers(0, len(xk), len(xk))
                    c1 = emergence.log_crossing(x1[i1], np.asarray(r1(rng))[i1], threshold)
                    ck = emergence.log_crossing(xk[ik], np.asarray(rk(rng))[ik], threshold)
                    if c1 is not None and ck is not None:
                        diffs.append(ck - c1)
                lo, hi = np.percentile(diffs, [2.5, 97.5]) if len(diffs) >= 20 else (np.nan,
                                                                                     np.nan)
                row["N_k / N_1"] = 10 ** (b - a)
                row["95% interval"] = f"{10 ** lo:.2f}–{10 ** hi:.2f}" if np.isfinite(lo) \
                    else "too few resamples cross"
                row["verdict"] = (f"{name(depth)} needs fewer parameters" if hi < 0 else
                                  f"{name(depth)} needs more parameters" if lo > 0 else
                                  "cannot tell apart") if np.isfinite(lo) else "cannot tell"
            rows.append(row)
    return pd.DataFrame(rows)


def loss_differences(final: pd.DataFrame, bootstrap: int = 300, seed: int = 0) -> pd.DataFrame:
    """For each depth k > 1: held-out loss of depth k minus depth 1 at equal N (the
    geometric middle of the N range both families cover), from a line fitted to
    log loss against log N per family, with a bootstrap interval (shapes, then seeds)."""
    families = {d: g.dropna(subset=["eval_loss"]) for d, g in final.groupby("depth")}
    if 1 not in families or "eval_loss" not in final:
        return pd.DataFrame()

    def prepared(g):
        params, value, resample = emergence.cells(g, "eval_loss", g["eval_loss"], None)
        return np.log10(params), value, resample

    def at(x, y, point):
        slope, intercept = np.polyfit(x, np.log(y), 1)
        return float(np.exp(intercept + slope * point))

    x1, y1, r1 = prepared(families[1])
    rows = []
    for depth, g in sorted(families.items()):
        if depth == 1 or len(g) < 2 or len(x1) < 2:
            continue
        xk, yk, rk = prepared(g)
        lo_x, hi_x = max(x1.min(), xk.min()), min(x1.max(), xk.max())
        if len(xk) < 2 or lo_x > hi_x:
            continue
        point = (lo_x + hi_x) / 2
        rng, diffs = np.random.default_rng(seed), []
        for _ in range(bootstrap):
            i1, ik = rng.integers(0, len(x1), len(x1)), rng.integers(0, len(xk), len(xk))
            if len(set(x1[i1])) > 1 and len(set(xk[ik])) > 1:
                diffs.append(at(xk[ik], np.asarray(rk(rng))[ik], point)
                             - at(x1[i1], np.asarray(r1(rng))[i1], point))
        diff = at(xk, yk, point) - at(x1, y1, point)
        lo, hi = np.percentile(diffs, [2.5, 97.5]) if len(diffs) >= 20 else (np.nan, np.nan)
        rows.append({"depth": depth, "at N": 10 ** point, "loss_k − loss_1": diff,
                     "95% interval": f"{lo:+.3f} to {hi:+.3f}" if np.isfinite(lo) else "",
                     "verdict": ("deeper is lower" if hi < 0 else "deeper is higher"
                                 if lo > 0 else "cannot tell apart") if np.isfinite(lo)
                     else "cannot tell"})
    return pd.DataFrame(rows)
