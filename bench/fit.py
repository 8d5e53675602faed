"""Time the Chinchilla fit and its bootstrap on the reference data (Besiroglu et al.), and
count what each fit compiles.

    python bench/fit.py [--bootstrap 4000] [--repeats 3]

The grid search (4,500 starts, damped Newton under jax.vmap: SCREEN_ITER steps each, then
the best ROWS to convergence: analysis/fit.py) runs once; the bootstrap fits the
resamples ROWS at a time the same way, each from the full-data optimum. The first fit of
the process compiles (no persistent compilation cache here); the bench then fits again
with the same points, one point fewer and another bootstrap, and prints how many programs
each traced and compiled (0: the programs of the first fit were reused). Timings:
docs/results.md.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import pandas as pd

from analysis.fit import fit_chinchilla

DATA = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "chinchilla",
                    "chinchilla_fig4_points.csv")
EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "traced",
          "/jax/core/compile/backend_compile_duration": "compiled"}


class Compilations:
    """Counts the programs JAX traces and compiles while in the `with` block."""

    def __enter__(self):
        self.counts = dict.fromkeys(EVENTS.values(), 0)
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, event, duration, **kwargs):
        if event in EVENTS:
            self.counts[EVENTS[event]] += 1

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    df = pd.read_csv(DATA)
    df = df[df["loss"] < df["loss"].nlargest(5).min()]
    n = df["Model Size"].to_numpy()
    d = df["Training FLOP"].to_numpy() / (6 * n)
    loss = df["loss"].to_numpy()

    def once(points=None, bootstrap=args.bootstrap):
        points = points or len(n)
        with Compilations() as c:
            start = time.perf_counter()
            result = fit_chinchilla(n[:points], d[:points], loss[:points], bootstrap=bootstrap)
            return result, time.perf_counter() - start, c.counts

    _, first_s, first = once()
    print(f"first fit of the process ({args.bootstrap} resamples, compiling included): "
          f"{first_s:.1f} s; {first['traced']} programs traced, {first['compiled']} compiled")
    for label, kwargs in (("same points", {}), (f"{len(n) - 1} points", {"points": len(n) - 1}),
                          ("1,000 resamples", {"bootstrap": 1000})):
        _, seconds, counts = once(**kwargs)
        print(f"again, {label}: {seconds:.1f} s; {counts['traced']} traced, "
              f"{counts['compiled']} compiled")

    def timed(bootstrap):  # the fastest of --repeats (this machine's timings are noisy)
        times = []
        for _ in range(args.repeats):
            result, seconds, _ = once(bootstrap=bootstrap)
            times.append(seconds)
        return result, min(times)

    point, grid_s = timed(0)
    full, both_s = timed(args.bootstrap)
    print(f"grid search fit: {grid_s:.1f} s; {args.bootstrap} bootstrap fits: "
          f"{both_s - grid_s:.1f} s (total with the grid {both_s:.1f} s; best of "
          f"{args.repeats})")
    print(full.convergence.describe())
    for key in ("E", "A", "B", "alpha", "beta"):
        print(f"{key:>6} {point.params[key]:10.4g} ± {full.std_errors[key]:.3g}  "
              f"{full.describe(key)}")


if __name__ == "__main__":
    main()
