"""tinyscale's train step against the PyTorch peer, side by side in one invocation.
One file: a benchmark run as one script, its method written out below.

    python bench/peer.py [--shapes d64-L2-h4,d256-L4-h8,d512-L8-h8] [--rounds 5]
                         [--seconds 2] [--out results.json]

The peer is what a researcher would pick instead: Hugging Face `GPTNeoForCausalLM` (the
TinyStories architecture), all-global attention, dropout 0, trained with AdamW (fused,
decay on matrices only) and global-norm clipping, eagerly and under `torch.compile`
(the loss's forward and backward compiled; the fused optimizer step runs as is).
tinyscale trains the same shape with its own step (`tinyscale.train.steps`), in the `gpt_neo`
family (all-global, the same parameters) and in the default `llama` family. Every
contestant uses the config's defaults: lr, betas, eps, decay 0.1, clipping at 1.0.

Vocabulary 4096, sequence 256, batch 32, float32, random tokens: a new batch every step
(a pool of 16 cycled), placed on the device inside the timed loop.

Each contestant lives in its own process (no two thread pools share the cores), built
once per shape; time to first step (tracing, compiling and one step) is measured there.
Then two warm-up steps, excluded, and `--rounds` rounds in which the contestants take
turns, A B C D A B C D, each running a block of about `--seconds`. Tokens/s is the
median over rounds. MFU = tokens/s x training FLOPs per token (tinyscale.model.counting, the
same count for torch's and tinyscale's GPT-Neo; the llama shape counts its own SwiGLU)
/ the float32 matmul peak, probed (jax, 2048^2) before and after the rounds. The other
load on the machine during each block (all CPU time in /proc/stat minus the contestant's
own) is printed in cores.

After the rounds, the GEMM floor: the step's dense matmuls alone (every block's and the
output projection's forward product and its two backward products, x W, g W^T, x^T g,
timed one by one in jax and in torch, medians), as tokens/s -- what a step would reach if
attention, norms, activations, the loss's softmax and the optimizer cost nothing. It says
how far library choice and fusion can move the step: when the floor itself is below
1.2 x torch's figure, no rewrite of the rest of the step reaches that ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time

import numpy as np

VOCAB, SEQ, BATCH = 4096, 256, 32
CONTESTANTS = ("torch eager", "torch.compile", "tinyscale gpt_neo", "tinyscale llama")


def _config(family: str, d: int, layers: int, heads: int):
    from tinyscale import config as config_lib
    c = config_lib.get_config()
    c.model.update(family=family, d_model=d, n_layers=layers, n_heads=heads, max_seq_len=SEQ,
                   attention_pattern="global")
    c.train.update(seq_len=SEQ, batch_size=BATCH)
    c.data.vocab_size = VOCAB
    return c


def _batches():
    rng = np.random.default_rng(0)
    return [rng.integers(0, VOCAB, (BATCH, SEQ + 1), dtype=np.int32) for _ in range(16)]


def _torch_step(d: int, layers: int, heads: int, compiled: bool):
    import torch
    import torch.nn.functional as F
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    t = _config("gpt_neo", d, layers, heads).train
    torch.manual_seed(0)
    config = GPTNeoConfig(
        vocab_size=VOCAB, max_position_embeddings=SEQ, hidden_size=d, num_layers=layers,
        num_heads=heads, attention_types=[[["global"], layers]], intermediate_size=4 * d,
        embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0,
        activation_function="gelu_new", use_cache=False, bos_token_id=0, eos_token_id=0)
    model = GPTNeoForCausalLM(config).train()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": t.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=t.lr, betas=(t.b1, t.b2), eps=t.eps, fused=True)

    def loss_fn(inputs, targets):
        logits = model(input_ids=inputs).logits
        return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))

    loss_fn = torch.compile(loss_fn) if compiled else loss_fn

    def step(batch: np.ndarray):
        tokens = torch.from_numpy(batch).long()
        loss = loss_fn(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    n = sum(p.numel() for p in params)
    return step, lambda: None, n


def _tinyscale_step(family: str, d: int, layers: int, heads: int):
    import jax

    from tinyscale import parallel
    from tinyscale.model.spec import ModelSpec
    from tinyscale.train import optim, steps
    c = _config(family, d, layers, heads)
    mesh = parallel.make_mesh(c)
    spec = ModelSpec.from_config(c.model, VOCAB)
    params = steps.Params(spec, mesh, seed=0)
    tx, numbers = optim.optimizer(c.train, 1000), optim.stacked([optim.numbers(c.train, 1000)])
    train_step = steps.make_train_step(params, c.train, 1000)
    with jax.set_mesh(mesh):
        state = {"arrays": params.initial, "opt": tx.init(params.initial)}
    last = {}

    def step(batch: np.ndarray):
        state["arrays"], state["opt"], last["out"] = train_step(
            state["arrays"], state["opt"], parallel.global_batch(batch, mesh), numbers)

    def sync():
        jax.block_until_ready(last["out"])

    n = sum(x.size for x in params.initial.values())
    return step, sync, n


def _worker(name: str, shape: tuple[int, int, int], pipe) -> None:
    """Build one contestant, report its first step, then run blocks on request."""
    d, layers, heads = shape
    if name.startswith("torch"):  # imported before the clock starts: the first step
        import torch  # noqa: F401  (compile and run) is timed, not the import
        import transformers  # noqa: F401
    else:
        import jax  # noqa: F401

        import tinyscale.train.steps  # noqa: F401
        from tinyscale import process
        process.for_compute()  # XLA flags and memory as the `tinyscale` command has them
    start = time.perf_counter()
    if name.startswith("torch"):
        step, sync, n = _torch_step(d, layers, heads, compiled=name == "torch.compile")
    else:
        step, sync, n = _tinyscale_step(name.split()[-1], d, layers, heads)
    batches = _batches()
    step(batches[0])
    sync()
    first = time.perf_counter() - start
    for i in (1, 2):  # warm-up, excluded
        step(batches[i])
    sync()
    start = time.perf_counter()
    step(batches[3])
    sync()
    pipe.send({"first_step_s": first, "params": n, "step_s": time.perf_counter() - start})
    i = 4
    while (k := pipe.recv()) is not None:
        cpu0, start = os.times(), time.perf_counter()
        for _ in range(k):
            step(batches[i % len(batches)])
            i += 1
        sync()
        elapsed, cpu1 = time.perf_counter() - start, os.times()
        pipe.send({"elapsed": elapsed,
                   "cpu": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)})


def _busy_seconds() -> float:
    """CPU time spent by everything on the machine so far (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _peak() -> float:
    from tinyscale.train import metrics
    return metrics.measure_matmul_peak(sizes=(2048,), repeats=5)


def _gemms(shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """(rows, in, out) of each dense matmul of the GPT-Neo step, output projection last."""
    d, layers, _ = shape
    return layers * [(BATCH * SEQ, d, d)] * 4 + layers * [(BATCH * SEQ, d, 4 * d),
                                                          (BATCH * SEQ, 4 * d, d)] \
        + [(BATCH * SEQ, d, VOCAB)]


def _median_time(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_floor(shape: tuple[int, int, int]) -> dict[str, float]:
    """Tokens/s of the step's dense matmuls alone (forward, g W^T, x^T g), jax and torch."""
    import collections

    import jax
    import jax.numpy as jnp
    import torch
    fwd, dx, dw = (jax.jit(lambda x, w: x @ w), jax.jit(lambda g, w: g @ w.T),
                   jax.jit(lambda x, g: x.T @ g))
    rng = np.random.default_rng(0)
    seconds = {"jax": 0.0, "torch": 0.0}
    for (m, k, n), count in collections.Counter(_gemms(shape)).items():
        x, w, g = (rng.standard_normal(s, dtype=np.float32) for s in ((m, k), (k, n), (m, n)))
        jx, jw, jg = (jnp.asarray(a) for a in (x, w, g))
        seconds["jax"] += count * sum(_median_time(lambda f=f, a=a: f(*a).block_until_ready())
                                      for f, a in ((fwd, (jx, jw)), (dx, (jg, jw)),
                                                   (dw, (jx, jg))))
        tx, tw, tg = (torch.from_numpy(a) for a in (x, w, g))
        seconds["torch"] += count * sum(_median_time(lambda a=a, b=b: a @ b)
                                        for a, b in ((tx, tw), (tg, tw.T), (tx.T, tg)))
    return {name: BATCH * SEQ / s for name, s in seconds.items()}


def bench_shape(shape: tuple[int, int, int], rounds: int, seconds: float, contestants):
    from tinyscale.model import counting
    from tinyscale.model.spec import ModelSpec
    ctx = mp.get_context("spawn")
    workers = {}
    for name in contestants:  # built one at a time: each compile has the machine
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(name, shape, child), daemon=True)
        proc.start()
        workers[name] = (proc, parent, parent.recv())
        print(f"  {name}: first step {workers[name][2]['first_step_s']:.1f} s", flush=True)
    peaks = [_peak()]
    rates = {name: [] for name in contestants}
    other = {name: [] for name in contestants}
    for _ in range(rounds):
        for name, (_, pipe, info) in workers.items():
            k = max(2, round(seconds / info["step_s"]))
            busy0 = _busy_seconds()
            pipe.send(k)
            block = pipe.recv()
            busy = _busy_seconds() - busy0
            rates[name].append(k * BATCH * SEQ / block["elapsed"])
            other[name].append(max(0.0, busy - block["cpu"]) / block["elapsed"])
    for proc, pipe, _ in workers.values():
        pipe.send(None)
        proc.join(timeout=30)
    peaks.append(_peak())
    floor = gemm_floor(shape)
    peak = statistics.median(peaks)
    d, layers, heads = shape
    results = []
    for name in contestants:
        family = "llama" if name.endswith("llama") else "gpt_neo"
        spec = ModelSpec.from_config(_config(family, d, layers, heads).model, VOCAB)
        flops = counting.flops_per_token(spec, SEQ)
        rate = statistics.median(rates[name])
        results.append({"contestant": name, "params": workers[name][2]["params"],
                        "first_step_s": workers[name][2]["first_step_s"],
                        "tokens_per_s": rate, "min": min(rates[name]), "max": max(rates[name]),
                        "mfu": rate * flops / peak, "other_load": statistics.median(other[name])})
    return results, peak, floor


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="d64-L2-h4,d256-L4-h8,d512-L8-h8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per block")
    parser.add_argument("--contestants", default=",".join(CONTESTANTS))
    parser.add_argument("--out", help="also write the results as JSON")
    args = parser.parse_args()
    import jax
    import torch
    contestants = [x.strip() for x in args.contestants.split(",")]
    unknown = sorted(set(contestants) - set(CONTESTANTS))
    if unknown:
        parser.error(f"--contestants: unknown {unknown}; choose from {list(CONTESTANTS)}")
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x {jax.device_count()}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    everything = {}
    for shape_name in args.shapes.split(","):
        shape = tuple(int(x[1:]) for x in shape_name.split("-"))
        print(f"{shape_name}: building", flush=True)
        results, peak, floor = bench_shape(shape, args.rounds, args.seconds, contestants)
        torch_best = max((r["tokens_per_s"] for r in results
                          if r["contestant"].startswith("torch")), default=float("nan"))
        print(f"{shape_name} (matmul peak {peak / 1e9:.0f} GFLOP/s, median of "
              f"{args.rounds} rounds)")
        print(f"  {'contestant':<18} {'params':>10} {'1st step s':>10} {'tokens/s':>9} "
              f"{'(min-max)':>15} {'MFU':>6} {'vs torch':>8} {'other load':>10}")
        for r in results:
            r["vs_best_torch"] = r["tokens_per_s"] / torch_best
            print(f"  {r['contestant']:<18} {r['params']:>10,} {r['first_step_s']:>10.1f} "
                  f"{r['tokens_per_s']:>9,.0f} {r['min']:>7,.0f}-{r['max']:<7,.0f} "
                  f"{r['mfu']:>6.1%} {r['vs_best_torch']:>7.2f}x {r['other_load']:>9.2f}c",
                  flush=True)
        print(f"  GEMM floor (the dense matmuls alone): jax {floor['jax']:,.0f} tokens/s "
              f"({floor['jax'] / torch_best:.2f}x torch's best step), torch "
              f"{floor['torch']:,.0f} ({floor['torch'] / torch_best:.2f}x)", flush=True)
        everything[shape_name] = {"peak_flops": peak, "results": results, "gemm_floor": floor}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(everything, f, indent=1)


if __name__ == "__main__":
    main()
