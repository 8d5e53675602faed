"""Confounds: what moves together with N across a sweep's runs, and emergence read where it
does not.

Over the finished runs (each at its own budget) three pairs are checked: N (parameters) with
D (tokens), N with the learning rate, and width with depth. A pair is confounded when both
vary (by a factor of MIN_SPREAD or more) and either one is a function of the other (each
value of one comes with a single value of the other) or their Spearman rank correlation is
at least STRONG in size over at least MIN_VALUES distinct values of each. Each confound is
one computed sentence: the two quantities, the correlation, what it means for emergence by N.

Emergence by N is then read where D does not move:

* iso-token: for each metric, the largest token count D (within TOLERANCE) at which every
  size has a measurement -- a run's held-out loss at each eval step (metrics.jsonl), an
  earlier checkpoint's evaluation (`tinyscale eval --step`), a run's or a branch's final
  evaluation (train.branches) -- and its emergence points (analysis.emergence; intervals
  over shapes and seeds). A measurement taken before its run's schedule ended (learning
  rate not yet decayed) is used where nothing else is at that D, and counted as such.
* along the compute-optimal frontier, where the sweep holds budgets (analysis.budgets.enough):
  the (N, D) cells (means over seeds) whose loss is below that of every cell of less
  compute, and each metric's crossing along them.

When D moves with N and a common D exists, the report's headline emergence is the
iso-token reading; the reading at the runs' own budgets is shown labelled as confounded.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy import stats

from analysis import budgets, emergence

PAIRS = (("params", "tokens"), ("params", "train.lr"), ("width", "depth"))
NAMES = {"params": ("N (parameters)", "size", "sizes"),
         "tokens": ("D (tokens)", "token count", "token counts"),
         "train.lr": ("the learning rate", "learning rate", "learning rates"),
         "width": ("width", "width", "widths"), "depth": ("depth", "depth", "depths")}
STRONG = 0.8       # |Spearman rho| from which two quantities move together
MIN_VALUES = 3     # distinct values of each that a correlation needs
MIN_SPREAD = 1.1   # largest / smallest value below which a quantity counts as fixed
TOLERANCE = 0.05   # relative distance at which two token counts count as one D


def _value(column: str, v: float) -> str:
    return f"{v:.3g}" if column == "train.lr" else f"{v:,.0f}"


@dataclasses.dataclass
class Confound:
    x: str                  # the columns, e.g. params and tokens
    y: str
    rho: float              # Spearman rank correlation over the runs
    x_values: int           # distinct values of each
    y_values: int
    function: str           # "y of x", "x of y" or "" (neither is a function of the other)
    runs: int
    ends: tuple             # (y at the smallest x, y at the largest x): medians
    x_range: tuple          # (smallest x, largest x)

    def trend(self) -> str:
        """'D (tokens) rises with N (parameters)' and the like."""
        x_name, y_name = NAMES[self.x][0], NAMES[self.y][0]
        return f"{y_name[:1].upper()}{y_name[1:]} " + (
            "rises with" if self.rho > 0 else "falls as" if self.rho < 0
            else "changes with") + f" {x_name}" + (" grows" if self.rho < 0 else "")

    def sentence(self) -> str:
        (x_name, x_one, x_many), (_, y_one, _) = NAMES[self.x], NAMES[self.y]
        function = (f"; each {x_one} has one {y_one}" if self.function == "y of x" else
                    f"; each {y_one} has one {x_one}" if self.function == "x of y" else "")
        text = (f"{self.trend()} across the {self.runs} finished "
                f"runs (Spearman ρ = {self.rho:+.2f} over {self.x_values} {x_many}"
                f"{function}): from {_value(self.y, self.ends[0])} at {x_name.split()[0]} "
                f"= {_value(self.x, self.x_range[0])} to {_value(self.y, self.ends[1])} at "
                f"{x_name.split()[0]} = {_value(self.x, self.x_range[1])}. ")
        if self.y == "tokens":
            more = "more" if self.ends[1] > self.ends[0] else "fewer"
            return text + ("Read across runs at their own budgets, emergence by N is then "
                           "also emergence by D: a larger model that crosses a threshold "
                           f"has also seen {more} tokens.")
        if self.y == "train.lr":
            return text + ("A difference between sizes is then also a difference of learning "
                           "rate, so emergence by N holds this sweep's learning-rate choice "
                           "too (as intended only where each size's rate was tuned for it).")
        return text + ("The all-depths emergence by N then mixes a change of width with a "
                       "change of depth; the per-depth rows hold depth fixed.")


def detect(final: pd.DataFrame) -> tuple[list[Confound], list[str]]:
    """(the confounded pairs among the finished runs `final`, a clause for each pair
    checked and found clear)."""
    found, clear = [], []
    for x, y in PAIRS:
        if x not in final or y not in final:
            continue
        pair = final[[x, y]].dropna().astype(float)
        xs, ys = pair[x].nunique(), pair[y].nunique()
        y_name = NAMES[y][0]
        if len(pair) < 2 or ys < 2 or pair[y].max() < MIN_SPREAD * pair[y].min():
            if len(pair):
                clear.append(f"{y_name} is fixed at {_value(y, pair[y].median())}" if ys < 2
                             else f"{y_name} varies by less than "
                             f"{MIN_SPREAD - 1:.0%} ({_value(y, pair[y].min())}–"
                             f"{_value(y, pair[y].max())})")
            continue
        if xs < 2 or pair[x].max() < MIN_SPREAD * pair[x].min():
            continue
        rho = float(stats.spearmanr(pair[x], pair[y]).statistic)
        function = "y of x" if pair.groupby(x)[y].nunique().max() == 1 else \
            "x of y" if pair.groupby(y)[x].nunique().max() == 1 else ""
        if function or (abs(rho) >= STRONG and min(xs, ys) >= MIN_VALUES):
            lo, hi = pair[x].min(), pair[x].max()
            found.append(Confound(x, y, rho, xs, ys, function, len(pair),
                                  (float(pair.loc[pair[x] == lo, y].median()),
                                   float(pair.loc[pair[x] == hi, y].median())),
                                  (float(lo), float(hi))))
        else:
            clear.append(f"{y_name} does not move with {NAMES[x][0]} (ρ = {rho:+.2f})")
    return found, clear


@dataclasses.dataclass
class Reading:
    """A metric's emergence read at one token count D common to every size."""
    metric: str
    tokens: float | None        # the common D; None: no token count has every size
    crossings: list             # emergence.Crossing, all depths and per depth
    measurements: int           # measurements read at D
    before_end: int             # of them, taken before their run's schedule ended


def points(everything: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    """Every measurement of the runs of `final` and of their branches, with `lineage` (the
    run it belongs to) and `end` (taken at the end of a schedule: a final evaluation)."""
    names = set(final["run"])
    runs = everything[everything["run"].isin(names)].assign(
        lineage=lambda d: d["run"], end=lambda d: d["final"].astype(bool))
    parts = [runs]
    if "branch_of" in everything:
        branch = everything[everything["branch_of"].isin(names) &
                            everything["final"].astype(bool)]
        parts.append(branch.assign(lineage=branch["branch_of"], end=True))
    out = pd.concat(parts, ignore_index=True)
    return out[out["tokens"] > 0]


def iso_token(pts: pd.DataFrame, sizes, metric: str, threshold: float,
              bootstrap: int) -> Reading:
    """`metric`'s emergence at the largest D where every size in `sizes` was measured."""
    have = pts.dropna(subset=[metric]) if metric in pts else pts.iloc[:0]
    needed = set(sizes)
    for d in sorted(set(have["tokens"]), reverse=True):
        gap = np.abs(np.log(have["tokens"] / d))
        near = have[gap <= np.log1p(TOLERANCE)].assign(_gap=gap)
        if not needed <= set(near["params"]):
            continue
        pick = near.sort_values(["end", "_gap"], ascending=[False, True]) \
            .drop_duplicates("lineage")
        pick = pick[pick["params"].isin(needed)].drop(columns="_gap")
        crossings = emergence.table(pick, [metric], threshold, bootstrap)
        return Reading(metric, float(d), crossings, len(pick), int((~pick["end"]).sum()))
    return Reading(metric, None, [], 0, 0)


def frontier(pts: pd.DataFrame) -> pd.DataFrame:
    """The (N, D) cells (means over seeds; end-of-schedule measurements only) whose loss is
    below that of every cell of less compute, in order of compute; empty unless the sweep
    holds budgets (analysis.budgets.enough)."""
    ended = pts[pts["end"]].dropna(subset=["eval_loss"])
    if ended.empty or not budgets.enough(ended):
        return pd.DataFrame()
    numeric = ended.select_dtypes("number").columns.drop(["params", "tokens"], errors="ignore")
    cells = ended.groupby(["params", "tokens"], as_index=False)[list(numeric)].mean() \
        .sort_values("flops")
    best = cells["eval_loss"].cummin().shift(fill_value=np.inf)
    return cells[cells["eval_loss"] < best].reset_index(drop=True)


def along(cells: pd.DataFrame, metric: str, threshold: float,
          bootstrap: int) -> emergence.Crossing:
    values = cells[metric]
    if metric in emergence.CONTINUOUS:
        values = emergence.scaled(values, emergence.CONTINUOUS[metric])
    return emergence.crossing(cells["params"], values, threshold, "frontier", metric,
                              bootstrap)


@dataclasses.dataclass
class Panel:
    runs: int
    confounds: list             # Confound
    clear: list                 # clauses: pairs checked and found clear
    readings: list              # Reading per metric (D varies among the runs), else []
    frontier: pd.DataFrame      # the frontier's cells, empty without budgets
    along_frontier: list        # emergence.Crossing per metric along the frontier

    @property
    def tokens_confounded(self) -> Confound | None:
        return next((c for c in self.confounds if c.y == "tokens"), None)

    @property
    def headline(self) -> bool:
        """The iso-token reading is the headline: D moves with N and a common D exists."""
        return self.tokens_confounded is not None and any(r.tokens for r in self.readings)

    def iso(self, metric: str, family: str = "all depths"):
        """(the iso-token crossing of `metric` for `family`, its D) or (None, None)."""
        for r in self.readings:
            for c in r.crossings:
                if r.metric == metric and c.family == family:
                    return c, r.tokens
        return None, None

    def table(self) -> pd.DataFrame:
        rows = [{"metric": r.metric, "D (tokens)": r.tokens, "family": c.family,
                 "emergence": c.describe(), "measurements": r.measurements,
                 "before schedule end": r.before_end}
                for r in self.readings for c in r.crossings]
        return pd.DataFrame(rows)

    def frontier_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"metric": c.metric, "emergence along the frontier":
                              c.describe()} for c in self.along_frontier])

    def line(self) -> str:
        if not self.confounds:
            return (f"No confound found across the {self.runs} finished runs: "
                    + "; ".join(self.clear) + ".") if self.clear else ""
        text = " ".join(c.sentence() for c in self.confounds)
        if self.tokens_confounded is None:
            return text
        read = [r for r in self.readings if r.tokens]
        missing = [r.metric for r in self.readings if not r.tokens]
        if read:
            text += " The headline emergence below is read at one D for every size: " + \
                "; ".join(f"{r.metric} at {r.tokens:,.0f} tokens" + (
                    f" ({r.before_end} of {r.measurements} measurements taken before their "
                    "run's learning-rate schedule ended)" if r.before_end else "")
                    for r in read) + "."
        if missing:
            text += (f" {', '.join(missing)}: no token count at which every size was "
                     "evaluated; evaluate earlier checkpoints (tinyscale eval --step) or "
                     "train branches (train.branches) to read "
                     f"{'them' if len(missing) > 1 else 'it'} at a fixed D.")
        return text


def compute(everything: pd.DataFrame, final: pd.DataFrame, metrics, threshold: float = 0.5,
            bootstrap: int = 300) -> Panel | None:
    """The confounds of the finished runs `final` and emergence read at fixed D and along
    the frontier from their measurements in `everything` (analysis.runs.load); None
    without finished runs."""
    if "external" in final:  # eval --hf models were trained elsewhere, on their own D
        final = final[~final["external"].astype(bool)]
    if final.empty:
        return None
    found, clear = detect(final)
    pts = points(everything, final)
    metrics = [m for m in metrics if m in pts]
    readings = []
    if final["tokens"].nunique() > 1:
        sizes = final["params"].unique()
        readings = [iso_token(pts, sizes, m, threshold, bootstrap) for m in metrics]
    cells = frontier(pts)
    along_frontier = [along(cells, m, threshold, bootstrap) for m in metrics
                      if not cells.empty and m in cells and cells[m].notna().sum() >= 2]
    return Panel(len(final), found, clear, readings, cells, along_frontier)
