"""The adaptive sweep against the full grid, replayed on a pool of trained runs.

    tinyscale sweep run sweeps/adaptive_pool.py --sweep-dir runs/adaptive-pool
    python bench/adaptive.py runs/adaptive-pool [--metric coherence] [--orders 20]

Retrospective: the pool (a dense grid, every run trained) gives the full grid's
emergence interval. The adaptive path starts from three widths (smallest, middle,
largest) at one seed and lets `tinyscale sweep next`'s choice (analysis/adaptive.py:
`select`, one run at a time, from the pool's runs not used yet, their cost their
training FLOPs) add runs; after each, the interval is measured as the report measures
it (analysis/emergence.py, on the runs used so far). The random baseline adds the same
pool's runs in random orders from the same start. Printed: the FLOPs each needs to reach
an interval no wider than the full grid's, and every path (JSON with --out).
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from analysis import adaptive, emergence, next_runs, report, runs


def width(final, metric: str, samples: dict, threshold: float, bootstrap: int) -> float:
    """The report's interval width (decades of N) of the runs `final`; inf if none."""
    crossings = emergence.table(final, [metric], threshold, bootstrap, samples)
    c = crossings[0] if crossings else None
    return next_runs.decades(c.interval) if c and c.status == "crossed" and c.interval \
        else math.inf


def path(final, order, metric, samples, threshold, bootstrap):
    """[(runs used, FLOPs spent, width)] adding the runs of `order` one by one."""
    used, out = [], []
    for name in order:
        used.append(name)
        if len(used) >= 3:
            rows = final[final["run"].isin(used)]
            out.append((list(used), float(rows["flops"].sum()),
                        width(rows, metric, samples, threshold, bootstrap)))
    return out


def adaptive_order(final, start, metric, samples, threshold, bootstrap):
    """The start, then the runs `select` picks one at a time (until it picks none)."""
    used = list(start)
    family = f"depth {final['depth'].iloc[0]}"
    while len(used) < len(final):
        rows = final[final["run"].isin(used)]
        now = width(rows, metric, samples, threshold, bootstrap)
        if not math.isfinite(now):
            break
        pool = [adaptive.Candidate(r["run"], family, tuple(r[k] for k in emergence.SHAPE),
                                   r["params"], r["flops"])
                for _, r in final.iterrows() if r["run"] not in used]
        picks = adaptive.select(
            {family: adaptive.Family.of(family, rows, metric, samples, threshold)},
            {family: now}, lambda chosen, pool=pool: [c for c in pool if c not in chosen], math.inf,
            max_picks=1, min_gain=0.0)  # replayed to the end: the CLI stops at MIN_GAIN
        if not picks:
            break
        used.append(picks[0].candidate.name)
    return used


def reached(steps, target: float):
    """FLOPs at the first step whose width is no wider than `target` (None: never)."""
    return next((flops for _, flops, w in steps if w <= target * (1 + 1e-9)), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pool")
    parser.add_argument("--metric", default="coherence")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--bootstrap", type=int, default=300)
    parser.add_argument("--orders", type=int, default=20, help="random orders")
    parser.add_argument("--out", help="write every path here (JSON)")
    args = parser.parse_args()
    loaded = runs.load(args.pool)
    final, _ = report.baseline(runs.final(loaded[loaded["branch_of"].isna()]))
    final = final.sort_values(["width", "seed"]).reset_index(drop=True)
    samples = runs.samples(args.pool, final["run"])
    full = width(final, args.metric, samples, args.threshold, args.bootstrap)
    total = float(final["flops"].sum())
    widths = sorted(final["width"].unique())
    start = [final[(final["width"] == w)].iloc[0]["run"]
             for w in (widths[0], widths[len(widths) // 2], widths[-1])]
    rest = [r for r in final["run"] if r not in start]
    order = adaptive_order(final, start, args.metric, samples, args.threshold,
                           args.bootstrap)
    ours = path(final, order, args.metric, samples, args.threshold, args.bootstrap)
    rng = np.random.default_rng(0)
    randoms = [path(final, start + list(rng.permutation(rest)), args.metric, samples,
                    args.threshold, args.bootstrap) for _ in range(args.orders)]
    hits = [reached(p, full) for p in randoms]
    print(f"pool {args.pool}: {len(final)} runs, widths {widths}, {total:.3g} FLOPs; "
          f"{args.metric} full-grid interval {full:.3f} decades")
    for used, flops, w in ours:
        print(f"  adaptive {len(used):>2} runs {flops:9.3g} FLOPs  width {w:.3f}  +{used[-1]}")
    mine = reached(ours, full)
    print("| path | FLOPs to reach the full grid's width | share of the full grid |")
    print("|---|---|---|")
    print(f"| full grid ({len(final)} runs) | {total:.3g} | 100% |")
    print("| adaptive (`sweep next`'s choice) | "
          + (f"{mine:.3g} | {mine / total:.0%} |" if mine else
             f"not reached (stopped after {len(order)} runs, width {ours[-1][2]:.3f}) | - |"))
    mean = float(np.mean(hits))
    print(f"| random order (mean of {args.orders}; range {min(hits):.3g}-{max(hits):.3g}) | "
          f"{mean:.3g} | {mean / total:.0%} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"full_width": full, "total_flops": total, "adaptive": ours,
                       "random": randoms}, f, indent=1)


if __name__ == "__main__":
    main()
