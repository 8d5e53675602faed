"""The adaptive sweep against the full grid, replayed on a pool of trained runs.

    tinyscale sweep run sweeps/adaptive_pool.py --sweep-dir runs/adaptive-pool
    python bench/adaptive.py runs/adaptive-pool [--metric grammar] [--orders 20]

Retrospective: the pool (a dense grid, every run trained) gives the full grid's
emergence interval. The adaptive path starts from three widths (smallest, middle,
largest) at one seed and lets `tinyscale sweep next`'s choice (analysis/adaptive.py:
`select`, one run at a time, from the pool's runs not used yet, their cost their
training FLOPs) add runs until it proposes none; after each, the interval is measured
as the report measures it (analysis/emergence.py, on the runs used so far). The random
baseline adds the same pool's runs in random orders from the same start. Printed, for
two targets: the FLOPs each path needs to reach an interval no wider than the full
grid's, and no wider and holding the full grid's crossing (a few runs can give a narrow
interval in the wrong place); and every path (JSON with --out).
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from analysis import adaptive, emergence, report, runs


def crossing(final, metric: str, samples: dict, threshold: float, bootstrap: int):
    """The report's crossing of the runs `final` (its one family)."""
    return emergence.table(final, [metric], threshold, bootstrap, samples)[0]


def width(c) -> float:
    """A crossing's interval width in decades of N (inf: none)."""
    return math.log10(c.interval[1] / c.interval[0]) if c.status == "crossed" and \
        c.interval else math.inf


def path(final, order, metric, samples, threshold, bootstrap) -> list[dict]:
    """Each step of adding the runs of `order` one by one (from the third on)."""
    out = []
    for n in range(3, len(order) + 1):
        rows = final[final["run"].isin(order[:n])]
        c = crossing(rows, metric, samples, threshold, bootstrap)
        out.append({"runs": order[:n], "flops": float(rows["flops"].sum()), "width": width(c),
                    "interval": c.interval})
    return out


def adaptive_order(final, start, metric, samples, threshold):
    """The start, then the runs `select` picks one at a time (until it picks none)."""
    used = list(start)
    family = f"depth {final['depth'].iloc[0]}"
    while len(used) < len(final):
        rows = final[final["run"].isin(used)]
        pool = [adaptive.Candidate(r["run"], family, tuple(r[k] for k in emergence.SHAPE),
                                   r["params"], r["flops"])
                for _, r in final.iterrows() if r["run"] not in used]
        picks = adaptive.select(
            {family: adaptive.Family.of(family, rows, metric, samples, threshold)},
            lambda chosen, pool=pool: [c for c in pool if c not in chosen], math.inf,
            max_picks=1, min_gain=0.0)  # replayed until no run is expected to narrow it
        if not picks:
            break
        used.append(picks[0].candidate.name)
    return used


def reached(steps, full, holding: bool):
    """FLOPs at the first step no wider than the full grid's interval (and, `holding`,
    whose interval holds the full grid's crossing); None: never."""
    for s in steps:
        inside = s["interval"] is not None and s["interval"][0] <= full.params <= \
            s["interval"][1]
        if s["width"] <= width(full) * (1 + 1e-9) and (inside or not holding):
            return s["flops"]
    return None


def _cell(flops, total) -> str:
    return f"{flops:.3g} ({flops / total:.0%})" if flops is not None else "not reached"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pool")
    parser.add_argument("--metric", default="grammar")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--bootstrap", type=int, default=300)
    parser.add_argument("--orders", type=int, default=20, help="random orders")
    parser.add_argument("--out", help="write every path here (JSON)")
    args = parser.parse_args()
    loaded = runs.load(args.pool)
    final, _ = report.baseline(runs.final(loaded[loaded["branch_of"].isna()]))
    final = final.sort_values(["width", "seed"]).reset_index(drop=True)
    samples = runs.samples(args.pool, final["run"])
    full = crossing(final, args.metric, samples, args.threshold, args.bootstrap)
    total = float(final["flops"].sum())
    widths = [int(w) for w in sorted(final["width"].unique())]
    start = [final[(final["width"] == w)].iloc[0]["run"]
             for w in (widths[0], widths[len(widths) // 2], widths[-1])]
    rest = [r for r in final["run"] if r not in start]
    order = adaptive_order(final, start, args.metric, samples, args.threshold)
    ours = path(final, order, args.metric, samples, args.threshold, args.bootstrap)
    rng = np.random.default_rng(0)
    randoms = [path(final, start + list(rng.permutation(rest)), args.metric, samples,
                    args.threshold, args.bootstrap) for _ in range(args.orders)]
    print(f"pool {args.pool}: {len(final)} runs, widths {widths}, {total:.3g} FLOPs; "
          f"{args.metric} at {args.threshold:g}, full grid: {full.describe()}, "
          f"{width(full):.3f} decades")
    for s in ours:
        print(f"  adaptive {len(s['runs']):>2} runs {s['flops']:9.3g} FLOPs  width "
              f"{s['width']:.3f}  +{s['runs'][-1]}")
    print("\n| path | FLOPs to an interval as narrow as the full grid's | ... and holding "
          "its crossing |\n|---|---|---|")
    print(f"| full grid ({len(final)} runs) | {_cell(total, total)} | {_cell(total, total)} |")
    print(f"| adaptive (`sweep next`'s choice, {len(order)} runs before it stops) | "
          f"{_cell(reached(ours, full, False), total)} | "
          f"{_cell(reached(ours, full, True), total)} |")
    for holding in (False, True):
        hits = [reached(p, full, holding) for p in randoms]
        print(f"  random, {'holding' if holding else 'width'}: mean "
              f"{_cell(float(np.mean(hits)), total)}, median "
              f"{_cell(float(np.median(hits)), total)}, range {min(hits):.3g}-{max(hits):.3g}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"full": {"params": full.params, "interval": full.interval},
                       "total_flops": total, "adaptive": ours, "random": randoms}, f,
                      indent=1)


if __name__ == "__main__":
    main()
