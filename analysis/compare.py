"""One block against deep stacks at matched parameter counts."""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("eval_loss", "grammar", "consistency", "completion", "coherence")


def matched_pairs(final: pd.DataFrame, tolerance: float = 1.5) -> pd.DataFrame:
    """Each deeper run paired with the depth-1 run closest in non-embedding parameters
    (within a factor `tolerance`), with the differences deep - one and their intervals."""
    one, deep = final[final["depth"] == 1], final[final["depth"] > 1]
    rows = []
    for _, d in deep.iterrows():
        if one.empty:
            break
        ratio = np.abs(np.log(one["params_non_embedding"] / d["params_non_embedding"]))
        o = one.loc[ratio.idxmin()]
        if ratio.min() > np.log(tolerance):
            continue
        row = {"deep": d["run"], "one_block": o["run"], "depth": d["depth"],
               "params_deep": d["params_non_embedding"], "params_one": o["params_non_embedding"]}
        for m in METRICS:
            if m in d and m in o:
                # held-out loss has no standard error here: its interval stays unknown
                se = np.hypot(d.get(f"{m}_se", np.nan), o.get(f"{m}_se", np.nan))
                row[f"{m}_diff"] = d[m] - o[m]
                row[f"{m}_ci"] = 1.96 * se
        rows.append(row)
    return pd.DataFrame(rows)


def statement(pairs: pd.DataFrame) -> str:
    """What this sweep shows, in one paragraph (whichever way it goes)."""
    if pairs.empty:
        return ("No depth-1 and deeper runs have matched parameter counts in this sweep, so "
                "it cannot compare one block with deep stacks.")
    parts = []
    for m, better in (("eval_loss", "lower"), ("grammar", "higher"),
                      ("consistency", "higher"), ("coherence", "higher")):
        if f"{m}_diff" not in pairs:
            continue
        diff, ci = pairs[f"{m}_diff"], pairs[f"{m}_ci"]
        sign = -1 if m == "eval_loss" else 1
        if ci.isna().all():
            better_count = int(((sign * diff) > 0).sum())
            parts.append(f"{m.replace('_', ' ')}: deeper is better in {better_count} of "
                         f"{len(pairs)} pairs (mean difference {diff.mean():+.3f}, {better} is "
                         "better; no interval)")
            continue
        wins = int(((sign * diff) > ci).sum())
        losses = int(((sign * diff) < -ci).sum())
        parts.append(f"{m.replace('_', ' ')}: deeper is significantly better in {wins}, "
                     f"worse in {losses}, indistinguishable in {len(pairs) - wins - losses} of "
                     f"{len(pairs)} pairs (mean difference {diff.mean():+.3f}, {better} is "
                     "better)")
    return ("At matched non-embedding parameters (deeper run vs the closest depth-1 run): "
            + "; ".join(parts) + ". The TinyStories paper found depth matters more for "
            "consistency and width more for knowledge.")
