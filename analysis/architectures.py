"""Architecture as a sweep dimension: a label per run, emergence per architecture.

Every run gets an `architecture` label from its knobs -- the family, the block
(sequential or parallel), the attention (global, a sliding window, or a mix) and the
experts -- e.g. `llama`, `llama parallel`, `llama window 64`, `llama MoE 4 top-1`. Depth
is not part of it (it is a size, as width is); an MLP (or expert) width other than the
family's default is, as a share of it (`ff x0.25`). For each architecture with runs at
>= 2 sizes, each metric's emergence point is found as for depth families
(analysis.emergence: logistic in log N, hierarchical bootstrap over shapes, seeds and
prompts), twice: against total parameters and against the parameters active per token
(a mixture's top-k experts), since a mixture is "larger" by one count and not the other.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from analysis import compare, emergence
from tinyscale import config as config_lib
from tinyscale.model.spec import ModelSpec


def label(config: dict) -> str:
    """The architecture of a run's (flattened or nested) config."""
    c = config_lib.from_saved(config)
    m = c.model
    parts = [m.family]
    if m.parallel_block and m.family != "phi":
        parts.append("parallel")
    kinds = set(config_lib.attention_types(m))
    default = "global,local" if m.family == "gpt_neo" else "global"
    pattern = m.attention_pattern if m.attention_pattern != "auto" else default
    if kinds == {"local"}:
        parts.append(f"window {m.window_size}")
    elif pattern != default and "local" in kinds:
        parts.append(f"{pattern.replace(',', '/')} window {m.window_size}")
    if m.n_experts:
        parts.append(f"MoE {m.n_experts} top-{m.experts_per_token}")
    if m.d_ff:  # an MLP (or expert) width other than the family's: as a share of it
        default = ModelSpec.from_config(config_lib.from_saved({**c.to_dict(), "model": {
            **c.model.to_dict(), "d_ff": 0}}).model, 2).d_ff
        if m.d_ff != default:
            parts.append(f"ff x{m.d_ff / default:.2g}")
    return " ".join(parts)


@dataclasses.dataclass
class ByArchitecture:
    crossings: list            # emergence.Crossing, family = "<architecture> (active|total)"
    table: pd.DataFrame        # metric x architecture: emergence by active and total N
    architectures: list
    matched: pd.DataFrame      # each run against the plain run of its family nearest in N


def matched(final: pd.DataFrame, tolerance: float = 1.5) -> pd.DataFrame:
    """Each run of an architecture other than its family's plain one (`llama`) paired
    with the plain run of the same depth nearest in active and, separately, in total
    parameters (within a factor `tolerance`), with the differences and their intervals."""
    rows = []
    for arch, g in final.groupby("architecture"):
        plain = final[final["architecture"] == arch.split()[0]]
        if arch == arch.split()[0] or plain.empty:
            continue
        for _, run in g.iterrows():
            for count, column in (("active", "params_active"), ("total", "params")):
                same = plain[plain["depth"] == run["depth"]]
                if "seed" in same and (same["seed"] == run["seed"]).any():
                    same = same[same["seed"] == run["seed"]]  # seed with seed
                if same.empty:
                    continue
                ratio = np.abs(np.log(same[column] / run[column]))
                if ratio.min() > np.log(tolerance):
                    continue
                other = same.loc[ratio.idxmin()]
                rows.append({"architecture": arch, "matched by": count, "run": run["run"],
                             "against": other["run"], "params": run[column],
                             "params against": other[column],
                             **compare.differences(run, other)})
    return pd.DataFrame(rows)


def matched_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per architecture and matching: the mean difference of each metric over its
    pairs, with a 95% interval (the pairs' own errors, taken as independent)."""
    if pairs.empty:
        return pairs
    rows = []
    for (arch, count), g in pairs.groupby(["architecture", "matched by"], sort=False):
        row = {"architecture": arch, "matched by": count, "pairs": len(g)}
        for m in ("eval_loss", "grammar", "consistency", "coherence"):
            if f"{m}_diff" in g:
                half = np.sqrt((g[f"{m}_ci"] ** 2).sum()) / len(g)
                row[f"{m} diff"] = f"{g[f'{m}_diff'].mean():+.3f}" + (
                    f" ± {half:.3f}" if np.isfinite(half) else "")
        rows.append(row)
    return pd.DataFrame(rows)


def compute(final: pd.DataFrame, metrics, threshold: float, bootstrap: int,
            samples: dict | None) -> ByArchitecture | None:
    """Emergence per architecture (by active and by total parameters); None when the
    finished runs hold one architecture only."""
    if "architecture" not in final or final["architecture"].nunique() < 2:
        return None
    crossings, rows = [], {}
    archs = sorted(final["architecture"].unique())
    for arch in archs:
        g = final[final["architecture"] == arch]
        if g["params"].nunique() < 2:
            continue
        for count, column in (("active", "params_active"), ("total", "params")):
            h = g.assign(params=g[column], depth=0).reset_index(drop=True)
            for c in emergence.table(h, metrics, threshold, bootstrap,
                                     samples):
                if c.family != "all depths":
                    continue
                c = dataclasses.replace(c, family=f"{arch} ({count})")
                crossings.append(c)
                rows.setdefault((c.metric, count), {})[arch] = c.describe()
    table = pd.DataFrame([{"metric": m, "parameters": count, **cols}
                          for (m, count), cols in rows.items()])
    return ByArchitecture(crossings, table, archs, matched(final))
