"""Packing: models per hour, K runs as one program (launch.pack) against one at a time.

    python bench/pack.py [--k 8] [--shapes d16-L2-h1,d32-L2-h2,d64-L2-h4] [--out F.json]

The quickstart's settings (vocabulary 1024, sequence 256, batch 8, float32, AdamW),
random tokens, on whatever devices JAX sees. In one process: the solo train step
(tinyscale/train/steps.py) and the packed step of K runs (tinyscale/train/packed.py, the same step
under jax.vmap, each run with its own seed and learning rate), in alternating blocks of
about `--seconds` s, `--rounds` rounds; medians. Models per hour counts training only
(steps/s x runs per step / steps per run of `--tokens`), and with each program's compile
time (first step) added once per run, or per group of K.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from tinyscale import config as config_lib
from tinyscale import parallel, process
from tinyscale.model.spec import ModelSpec
from tinyscale.train import optim, packed, steps

VOCAB, SEQ, BATCH = 1024, 256, 8


def _contestants(d: int, layers: int, heads: int, k: int, vectorize):
    c = config_lib.get_config()
    c.model.update(d_model=d, n_layers=layers, n_heads=heads, max_seq_len=SEQ)
    c.train.update(seq_len=SEQ, batch_size=BATCH)
    mesh = parallel.make_mesh(c)
    spec = ModelSpec.from_config(c.model, VOCAB)
    rng = np.random.default_rng(0)

    def tokens(*lead):
        return rng.integers(0, VOCAB, (*lead, BATCH, SEQ + 1), dtype=np.int32)

    params = [steps.Params(spec, mesh, seed) for seed in range(k)]
    tx, n = optim.optimizer(c.train, 10_000), optim.numbers(c.train, 10_000)
    numbers = optim.stacked([n])
    solo_step = steps.make_train_step(params[0], c.train, 10_000)
    with jax.set_mesh(mesh):
        solo = [params[0].initial, tx.init(params[0].initial)]
    solo_batch = parallel.global_batch(tokens(), mesh)

    def run_solo():
        solo[0], solo[1], out = solo_step(solo[0], solo[1], solo_batch, numbers)
        return out

    packed_step, init_opt = packed.make_steps(params[0], c.train, 10_000, vectorize)
    scalars = optim.stacked([{**n, "lr": float(lr)} for lr in np.geomspace(1e-3, 1e-2, k)])
    arrays = jax.tree.map(lambda *xs: jnp.stack(xs), *[p.initial for p in params])
    with jax.set_mesh(mesh):
        state = [arrays, init_opt(arrays, scalars)]
    packed_batch = jnp.asarray(tokens(k))

    def run_packed():
        state[0], state[1], out = packed_step(state[0], state[1], packed_batch, scalars)
        return out
    return {"solo": (run_solo, 1), f"packed x{k}": (run_packed, k)}


def _first(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def bench_shape(shape, k: int, rounds: int, seconds: float, tokens: int,
                vectorize=None) -> dict:
    d, layers, heads = shape
    contestants = _contestants(d, layers, heads, k, vectorize)
    compile_s = {name: _first(fn) for name, (fn, _) in contestants.items()}
    per_block = {}
    for name, (fn, _) in contestants.items():
        jax.block_until_ready(fn())  # warm
        per_block[name] = max(1, round(seconds / _first(fn)))
    rates = {name: [] for name in contestants}
    for _ in range(rounds):
        for name, (fn, _) in contestants.items():
            start = time.perf_counter()
            for _ in range(per_block[name]):
                out = fn()
            jax.block_until_ready(out)
            rates[name].append(per_block[name] / (time.perf_counter() - start))
    steps_per_run = tokens / (BATCH * SEQ)
    out = {"shape": f"d{d}-L{layers}-h{heads}", "k": k}
    for name, (_, runs) in contestants.items():
        rate = statistics.median(rates[name])  # steps/s, each step trains `runs` models
        out[name] = {"steps_per_s": rate, "tokens_per_s": rate * runs * BATCH * SEQ,
                     "compile_s": compile_s[name],
                     "models_per_hour": 3600 * rate * runs / steps_per_run,
                     "models_per_hour_with_compile": 3600 * runs / (
                         compile_s[name] + steps_per_run / rate)}
    solo, pack = out["solo"], out[f"packed x{k}"]
    out["speedup"] = pack["models_per_hour"] / solo["models_per_hour"]
    out["speedup_with_compile"] = pack["models_per_hour_with_compile"] / \
        solo["models_per_hour_with_compile"]
    return out


def main():
    process.for_compute()  # XLA flags and memory as the `tinyscale` command has them
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=8, help="runs per packed program")
    parser.add_argument("--shapes", default="d16-L2-h1,d32-L2-h2,d64-L2-h4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per block")
    parser.add_argument("--tokens", type=int, default=2_000_000, help="per run")
    parser.add_argument("--lanes", choices=("auto", "vmap", "map"), default="auto",
                        help="the packed runs batched (vmap) or in turn (map); auto: "
                        "as launch.pack does on this backend")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    device = jax.devices()[0]
    lanes = args.lanes if args.lanes != "auto" else (
        "vmap" if jax.default_backend() != "cpu" else "map")
    print(f"{jax.device_count()} x {device.device_kind} ({device.platform}); K = {args.k}, "
          f"lanes {lanes}, runs of {args.tokens:,} tokens")
    print(f"{'shape':<11} {'solo tok/s':>11} {'packed tok/s':>13} {'models/h solo':>14} "
          f"{'packed':>8} {'speed-up':>9} {'compile solo':>13} {'packed':>7} "
          f"{'with compile':>13}")
    results = []
    for text in args.shapes.split(","):
        d, layers, heads = (int(x[1:]) for x in text.split("-"))
        vectorize = None if args.lanes == "auto" else args.lanes == "vmap"
        r = bench_shape((d, layers, heads), args.k, args.rounds, args.seconds, args.tokens,
                        vectorize)
        solo, pack = r["solo"], r[f"packed x{args.k}"]
        print(f"{r['shape']:<11} {solo['tokens_per_s']:>11,.0f} {pack['tokens_per_s']:>13,.0f} "
              f"{solo['models_per_hour']:>14.1f} {pack['models_per_hour']:>8.1f} "
              f"{r['speedup']:>8.2f}x {solo['compile_s']:>12.1f}s {pack['compile_s']:>6.1f}s "
              f"{r['speedup_with_compile']:>12.2f}x", flush=True)
        results.append(r)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": device.device_kind, "platform": device.platform,
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
