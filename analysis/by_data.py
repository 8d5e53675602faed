"""Data as a sweep dimension: a label per run, emergence per data setting, and how many
parameters each setting saves against the plain corpus.

Every run gets a `data` label from its data knobs: `plain`, or the parts that differ
from it -- `noise 0.25`, `grammar filter 0.75`, `generated (DIR)`, `distilled (w 0.5, T
2)` -- joined by `, `. For each setting with runs at >= 2 sizes, each metric's emergence
point is found as for depth families (analysis.emergence: logistic in log N,
hierarchical bootstrap over shapes, seeds and prompts), and against the plain corpus
the ratio N_setting / N_plain of the crossing points, with its bootstrap interval
(analysis.compare.curve_differences): below 1, the setting reaches the threshold with
fewer parameters -- a saving of 1 - ratio.
"""

from __future__ import annotations

import dataclasses
import os

import pandas as pd

from analysis import compare, emergence
from tinyscale import config as config_lib

PLAIN = "plain"


def label(config: dict) -> str:
    """The data setting of a run's (flattened or nested) config."""
    c = config_lib.from_saved(config)
    d, t = c.data, c.train
    parts = ["instruct"] if d.instruct else []
    if d.dataset == "generated":
        parts.append(f"generated ({os.path.basename(os.path.normpath(d.dir))})")
    if d.noise:
        parts.append(f"noise {d.noise:g}")
    if d.filter != "none":
        parts.append(f"{d.filter.replace('_', ' ')} filter {d.filter_keep:g}")
    if t.teacher:
        parts.append(f"distilled (w {t.distill_weight:g}, T {t.distill_temperature:g})")
    return ", ".join(parts) or PLAIN


@dataclasses.dataclass
class ByData:
    crossings: list            # emergence.Crossing, family = the data setting
    table: pd.DataFrame        # metric x setting: the emergence point and its interval
    savings: pd.DataFrame      # per metric and setting: N / N_plain, interval, verdict
    settings: list


def compute(final: pd.DataFrame, metrics, threshold: float, bootstrap: int,
            samples: dict | None) -> ByData | None:
    """Emergence per data setting and its ratio to the plain corpus's; None when the
    finished runs hold one setting only."""
    if "data" not in final or final["data"].nunique() < 2:
        return None
    crossings, rows = [], {}
    settings = sorted(final["data"].unique(), key=lambda s: (s != PLAIN, s))
    for setting in settings:
        g = final[final["data"] == setting]
        if g["params"].nunique() < 2:
            continue
        for c in emergence.table(g.assign(depth=0).reset_index(drop=True), metrics,
                                 threshold, bootstrap, samples):
            if c.family == "all depths":
                c = dataclasses.replace(c, family=setting)
                crossings.append(c)
                rows.setdefault(c.metric, {})[setting] = c.describe()
    table = pd.DataFrame([{"metric": m, **cols} for m, cols in rows.items()])
    savings = compare.curve_differences(final, metrics, threshold, bootstrap, samples,
                                        by="data", baseline=PLAIN)
    if not savings.empty:
        savings = savings.rename(columns={"N_k / N_1": "N / N_plain"})
    return ByData(crossings, table, savings, settings)
