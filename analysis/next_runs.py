"""`tinyscale sweep next SWEEP_DIR --budget FLOPS`: the runs that would narrow the
widest emergence interval most per FLOP (the estimator: analysis/adaptive.py).

The sweep is read as the report reads it (analysis/report.py: its runs, the baseline
architecture and data, the crossings of analysis/emergence.py). The target is the
metric whose crossing has the widest 95% interval, in decades of N, over the depth
families (with one depth, the sweep; with several, "all depths" mixes shapes and is left
out); every family of that metric that crossed is narrowed, the widest first.

Candidates, per family: new widths (the geometric midpoint of each pair of neighbouring
widths, and one geometric step beyond each end; rounded to an eighth of their power of
two, at least 4; the heads closest to the neighbour's head size that the config check
accepts), one more seed of each shape, and, as runs are chosen, the candidates their
shapes make. A new width copies every other override (tokens, learning rate, seed) of
the run of the nearest width; its cost is the training FLOPs `tinyscale sweep plan`
counts (tinyscale/launch/table.py).
"""

from __future__ import annotations

import dataclasses
import math

from analysis import adaptive, emergence, report, runs
from tinyscale import config as config_lib
from tinyscale.errors import TinyscaleError
from tinyscale.launch import plan, table
from tinyscale.launch.sweepdir import SweepDir
from tinyscale.model import counting


@dataclasses.dataclass
class Proposal:
    sweep_dir: str
    metric: str
    threshold: float
    budget: float
    crossings: list              # the target metric's crossed families (emergence.Crossing)
    widths: dict                 # family -> the report's interval width now (decades)
    estimates: dict              # family -> the estimator's width now (decades)
    picks: list                  # adaptive.Pick, in the order chosen

    spent = property(lambda self: sum(p.candidate.flops for p in self.picks))


def decades(interval) -> float:
    lo, hi = interval
    return math.log10(hi / lo)


def _target(crossings, several_depths: bool, metric: str | None, threshold: float,
            sweep_dir: str) -> list:
    families = [c for c in crossings if not (several_depths and c.family == "all depths")
                and not (not several_depths and c.family != "all depths")]
    crossed = [c for c in families if c.status == "crossed" and c.interval]
    if not crossed:
        states = ", ".join(f"{c.metric} ({c.family}): {c.describe()}" for c in families)
        raise TinyscaleError(
            f"no {metric or 'emergence metric'} crosses {threshold} with an interval in "
            f"{sweep_dir} yet ({states or 'no metric measured'}): widen the range of sizes "
            "by hand (`tinyscale sweep run`) until one does.")
    widest = max(crossed, key=lambda c: decades(c.interval))
    return [c for c in crossed if c.metric == widest.metric]


def _heads(width: int, head_size: float, values, overrides: dict) -> dict | None:
    """The overrides of `width` with the heads closest to `head_size` that validate."""
    divisors = [h for h in range(1, width + 1) if width % h == 0]
    for heads in sorted(divisors, key=lambda h: (abs(width / h - head_size), h)):
        new = {**overrides, "model.d_model": width, "model.n_heads": heads}
        try:
            return {"overrides": new, "values": plan.apply(values, new, "sweep next",
                                                           plan.run_name(new))}
        except TinyscaleError:
            continue
    return None


def _rounded(width: float) -> int:
    step = max(4, 2 ** math.floor(math.log2(width)) // 8)
    return max(4, int(round(width / step) * step))


class Candidates:
    """`candidates(chosen)` for adaptive.select, from sweep.json and the finished runs."""

    def __init__(self, sweep: SweepDir, final, families: list[str]):
        record = sweep.load()
        self.base = config_lib.Values.of(config_lib.from_saved(record["base"]))
        self.overrides = {r["name"]: r["overrides"] for r in record["runs"]}
        self.taken = set(self.overrides)
        self.families = families
        self.runs = []  # (family, cell, seed, overrides) of each finished run
        keys = list(emergence.SHAPE)
        for _, row in final.iterrows():
            family = f"depth {row['depth']}"
            if family in families and row["run"] in self.overrides:
                self.runs.append((family, tuple(row[k] for k in keys), int(row["seed"]),
                                  self.overrides[row["run"]]))

    def _candidate(self, family: str, overrides: dict, values) -> adaptive.Candidate:
        c = config_lib.Values.of(values)
        counts = counting.of_config(c)
        name = plan.run_name(overrides)
        run = plan.Run(0, name, overrides, c)
        return adaptive.Candidate(name, family, (c.model.n_layers, c.model.d_model,
                                                 c.model.n_heads, counts["total"]),
                                  counts["total"], table.rows([run])[0]["compute"], overrides)

    def __call__(self, chosen: list[adaptive.Candidate]) -> list[adaptive.Candidate]:
        known = self.runs + [(c.family, c.cell, int(c.overrides.get("seed", 0)), c.overrides)
                             for c in chosen]
        taken = self.taken | {c.name for c in chosen}
        out = {}
        for family in self.families:
            mine = [r for r in known if r[0] == family]
            for cell in {r[1] for r in mine}:  # one more seed of each shape
                seeds = [r for r in mine if r[1] == cell]
                last = max(seeds, key=lambda r: r[2])
                new = {**last[3], "seed": last[2] + 1}
                out[plan.run_name(new)] = (family, new, None)
            widths = sorted({r[1][1] for r in mine})
            targets = [math.sqrt(a * b) for a, b in zip(widths, widths[1:])]
            if len(widths) > 1:
                targets += [widths[0] ** 2 / widths[1], widths[-1] ** 2 / widths[-2]]
            for target in {_rounded(t) for t in targets} - set(widths):
                near = min(mine, key=lambda r: (abs(math.log(r[1][1] / target)), r[2]))
                made = _heads(target, near[1][1] / near[1][2], self.base, near[3])
                if made:
                    out[plan.run_name(made["overrides"])] = (family, made["overrides"],
                                                             made["values"])
        result = []
        for name, (family, overrides, values) in sorted(out.items()):
            if name in taken:
                continue
            if values is None:
                values = plan.apply(self.base, overrides, "sweep next", name)
            result.append(self._candidate(family, overrides, values))
        return result


def propose(sweep_dir: str, budget: float, metric: str | None = None,
            threshold: float = 0.5, bootstrap: int = 300) -> Proposal:
    """The runs to train next within `budget` FLOPs (the module's docstring)."""
    if not budget > 0 or not math.isfinite(budget):
        raise TinyscaleError(f"--budget {budget} is not a positive number of FLOPs: give "
                             "one, e.g. --budget 5e12.")
    sweep = SweepDir(sweep_dir)
    sweep.load()  # a sweep directory, or one line saying how to start one
    loaded = runs.load(sweep_dir)
    df = loaded[~loaded["external"] & loaded["branch_of"].isna()]
    final, _ = report.baseline(runs.final(df))
    if final.empty:
        raise TinyscaleError(f"{sweep_dir} holds no finished run yet: train some first "
                             "(`tinyscale sweep run FILE --sweep-dir DIR`).")
    present = [m for m in report.METRICS if m in final and final[m].notna().any()]
    if metric is not None and metric not in present:
        raise TinyscaleError(f"--metric {metric} is not measured in {sweep_dir}: use one of "
                             f"{', '.join(present) or 'none (no coherence metric measured)'}.")
    samples = runs.samples(sweep_dir, final["run"])
    crossings = emergence.table(final, [metric] if metric else present, threshold, bootstrap,
                                samples)
    target = _target(crossings, final["depth"].nunique() > 1, metric, threshold, sweep_dir)
    name = {c.family: (f"depth {final['depth'].iloc[0]}" if c.family == "all depths"
                       else c.family) for c in target}
    families = {name[c.family]: adaptive.Family.of(
        name[c.family], final[final["depth"] == int(name[c.family].split()[1])],
        target[0].metric, samples, threshold) for c in target}
    widths = {name[c.family]: decades(c.interval) for c in target}
    candidates = Candidates(sweep, final, list(families))
    options = candidates([])
    if options and min(c.flops for c in options) > budget:
        cheapest = min(options, key=lambda c: c.flops)
        raise TinyscaleError(f"--budget {budget:.3g} is below the cheapest candidate "
                             f"({cheapest.name}, {cheapest.flops:.3g} FLOPs): raise --budget.")
    picks = adaptive.select(families, candidates, budget)
    estimates = {f: adaptive.expected_width(family, []) for f, family in families.items()}
    return Proposal(str(sweep_dir), target[0].metric, threshold, budget, target, widths,
                    estimates, picks)


def render(p: Proposal) -> str:
    """The table of proposed runs and what each is expected to do to its interval."""
    lines = [f"widest emergence interval: {p.metric} at {p.threshold:g}"]
    for c, (family, estimate) in zip(p.crossings, p.estimates.items()):
        lines.append(f"  {family}: {c.describe()}, {decades(c.interval):.2f} decades; "
                     f"the estimator's width {estimate:.2f} decades")
    if not p.picks:
        lines.append(f"no candidate within {table.si(p.budget)} FLOPs is expected to take "
                     f"{adaptive.MIN_GAIN:.0%} off a width: a larger --budget may afford one "
                     "that would.")
        return "\n".join(lines)
    shown = [{"run": k.candidate.name, "family": k.candidate.family,
              "overrides": " ".join(f"{a}={b}" for a, b in k.candidate.overrides.items()),
              "params": table.si(k.candidate.params), "FLOPs": table.si(k.candidate.flops),
              "width after": f"{k.width_after:.2f} decades"} for k in p.picks]
    columns = list(shown[0])
    size = {c: max(len(c), *(len(r[c]) for r in shown)) for c in columns}
    head = "  ".join(f"{c:<{size[c]}}" for c in columns)
    lines += ["", f"proposed within {table.si(p.budget)} FLOPs "
              f"({table.si(p.spent)} used):", head, "-" * len(head)]
    lines += ["  ".join(f"{r[c]:<{size[c]}}" for c in columns) for r in shown]
    budget = f"{p.budget:g}" if float(f"{p.budget:g}") == p.budget else repr(p.budget)
    lines += ["", "train them: tinyscale sweep next "
              f"{p.sweep_dir} --budget {budget} --metric {p.metric} --run"]
    return "\n".join(lines)
