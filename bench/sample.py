"""Generation: KV-cached decoding against recomputing the whole prefix at every step.

    python bench/sample.py [--new-tokens 256]

Same model (d256 L4, vocabulary 4096), batch 8, a 32-token prompt, greedy. The
recompute baseline is itself jitted, with the sequence right-padded to a fixed length
so it compiles once; only the per-step work differs.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from tinyscale import config as config_lib
from tinyscale import parallel, process
from tinyscale.model.sample import Sampling, generate
from tinyscale.model.spec import ModelSpec
from tinyscale.train import steps


def main():
    process.for_compute()  # XLA flags and memory as the `tinyscale` command has them
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=256)
    args = parser.parse_args()
    c = config_lib.get_config()
    c.model.update(d_model=256, n_layers=4, n_heads=8, max_seq_len=512)
    params = steps.Params(ModelSpec.from_config(c.model, 4096), parallel.make_mesh(c), 0)
    prompts = np.random.default_rng(0).integers(3, 4096, (8, 32)).tolist()
    s = Sampling(max_new_tokens=args.new_tokens, eos_id=-1)
    generate(params.model, params.initial, prompts, s)  # compile
    start = time.perf_counter()
    generate(params.model, params.initial, prompts, s)
    cached = time.perf_counter() - start

    total = 32 + args.new_tokens

    @jax.jit
    def next_token(arrays, tokens_BT, length):
        logits = params.model(arrays)(tokens_BT)
        return jnp.argmax(logits[:, length - 1], axis=-1)

    tokens = np.zeros((8, total), np.int32)
    tokens[:, :32] = prompts
    next_token(params.initial, jnp.asarray(tokens), 32).block_until_ready()
    start = time.perf_counter()
    buf = jnp.asarray(tokens)
    for length in range(32, total):
        buf = buf.at[:, length].set(next_token(params.initial, buf, length))
    buf.block_until_ready()
    recompute = time.perf_counter() - start
    rate = 8 * args.new_tokens
    print(f"{args.new_tokens} new tokens, batch 8: KV cache {cached:.2f} s "
          f"({rate / cached:,.0f} tok/s), recompute {recompute:.2f} s "
          f"({rate / recompute:,.0f} tok/s); speed-up {recompute / cached:.1f}x")


if __name__ == "__main__":
    main()
