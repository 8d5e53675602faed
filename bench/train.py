"""Training throughput: tokens/s, compile time and MFU against a peak measured here.

    python bench/train.py [--steps 20] [--shapes d64-L2-h4,d256-L4-h8,d512-L8-h8]

Vocabulary 4096, sequence 256, batch 32, model.dtype auto (float32 on CPU), random
tokens (the data pipeline is benchmarked in bench/data.py). MFU = tokens/s x training
FLOPs/token (counting.py) / the float32 matmul peak. On this shared VM the peak (best
2048^2 matmul) drifts between about 195 and 275 GFLOP/s within a minute, so a single
peak makes MFU noisy by +-15%. The steps therefore run in blocks of about 2 s, each
right after its own peak probe; MFU is the median over blocks of block rate / its probe,
and the table shows the median probe. Attention FLOPs are counted in full, without
halving for causality (PaLM's convention), although the model skips the masked blocks.
With `--moe E-K` each shape is also trained as a mixture of experts; its MFU counts the
active experts' FLOPs.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from tinyscale import config as config_lib
from tinyscale import parallel, process
from tinyscale.model import counting
from tinyscale.model.spec import ModelSpec
from tinyscale.train import metrics, optim, steps


def bench_shape(d_model: int, n_layers: int, n_heads: int, n_steps: int, seq_len: int = 256,
                batch_size: int = 32, vocab: int = 4096, peak: float = 0.0, **model):
    """(total and active parameters, compile s, tokens/s, MFU, peak FLOP/s) of one shape.

    `peak` > 0: MFU against it (a chip's data-sheet peak: bench/device_check.py), with
    no probes; else against the float32 matmul peak probed before each block."""
    c = config_lib.get_config()
    c.model.update(d_model=d_model, n_layers=n_layers, n_heads=n_heads, max_seq_len=seq_len,
                   **model)
    c.train.update(seq_len=seq_len, batch_size=batch_size)
    mesh = parallel.make_mesh(c)
    spec = ModelSpec.from_config(c.model, vocab)
    params = steps.Params(spec, mesh, seed=0)
    tx, numbers = optim.optimizer(c.train, 1000), optim.stacked([optim.numbers(c.train, 1000)])
    step = steps.make_train_step(params, c.train, 1000)
    arrays = params.initial
    with jax.set_mesh(mesh):
        opt_state = tx.init(arrays)
    rng = np.random.default_rng(0)
    batch = parallel.global_batch(
        rng.integers(0, vocab, (batch_size, seq_len + 1), dtype=np.int32), mesh)
    start = time.perf_counter()
    arrays, opt_state, out = step(arrays, opt_state, batch, numbers)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - start
    flops = counting.flops_per_token(spec, seq_len)
    tokens = batch_size * seq_len
    start = time.perf_counter()
    arrays, opt_state, out = step(arrays, opt_state, batch, numbers)
    jax.block_until_ready(out)
    per_block = max(1, round(2.0 / (time.perf_counter() - start)))
    seconds, done, mfus, peaks = 0.0, 0, [], []
    while done < n_steps:
        k = min(per_block, n_steps - done)
        peaks.append(peak or metrics.measure_matmul_peak(sizes=(2048,), repeats=3))
        start = time.perf_counter()
        for _ in range(k):
            arrays, opt_state, out = step(arrays, opt_state, batch, numbers)
        jax.block_until_ready(out)
        elapsed = time.perf_counter() - start
        mfus.append(k * tokens / elapsed * flops / peaks[-1])
        seconds, done = seconds + elapsed, done + k
    counts = counting.parameter_counts(spec)
    return (counts["total"], counts["active"], compile_s, n_steps * tokens / seconds,
            float(np.median(mfus)), float(np.median(peaks)))


def main():
    process.for_compute()  # XLA flags and memory as the `tinyscale` command has them
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shapes", default="d64-L2-h4,d256-L4-h8,d512-L8-h8")
    parser.add_argument("--moe", default="", metavar="E-K",
                        help="also each shape as a mixture of E experts, top-K, of the dense "
                             "MLP's width (K=1: the same active parameters), e.g. 4-1")
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()}", flush=True)
    print(f"{'shape':<20} {'params':>10} {'active':>10} {'compile s':>10} {'tokens/s':>10} "
          f"{'peak GFLOP/s':>13} {'MFU':>6}")
    variants = [("", {})]
    if args.moe:
        experts, k = (int(x) for x in args.moe.split("-"))
        variants.append((f" MoE {experts}x{k}", {"n_experts": experts,
                                                  "experts_per_token": k}))
    for shape in args.shapes.split(","):
        d, layers, heads = (int(x[1:]) for x in shape.split("-"))
        for suffix, model in variants:
            n, active, compile_s, rate, mfu, peak = bench_shape(d, layers, heads, args.steps,
                                                                **model)
            print(f"{shape + suffix:<20} {n:>10,} {active:>10,} {compile_s:>10.1f} "
                  f"{rate:>10,.0f} {peak / 1e9:>13.0f} {mfu:>6.1%}", flush=True)


if __name__ == "__main__":
    main()
