"""Packing: which runs train as one program (`launch.pack`), and their stacked step.

Runs that differ only in knobs a step can take as numbers -- the seed (parameter init and
data order) and the optimizer's scalars (PACKABLE) -- share one compiled step over a
leading run axis: parameters, optimizer states and batches are stacked, and `jax.vmap`
maps the solo train step (tinyscale/train/steps.py) over them, each run's optimizer built from
its own scalars. A small model leaves an accelerator (or a CPU's vector units) mostly
idle; K of them in one program fill it (bench/pack.py measures models per hour).
The trainer (tinyscale/train/trainer.py) trains K >= 1 runs: each keeps its own run
directory, checkpoints in the solo layout, evaluation and state.
"""

from __future__ import annotations

import copy
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tinyscale import parallel
from tinyscale.model import mup
from tinyscale.train import optim, steps

PACKABLE = ("seed", "train.lr", "train.b1", "train.b2", "train.eps", "train.weight_decay",
            "train.final_lr_ratio")
SCALARS = tuple(k.split(".")[1] for k in PACKABLE if k.startswith("train."))
AUTO_MAX = 16  # launch.pack=auto: at most this many runs in one program


def key(config) -> str | None:
    """What runs packed together share: the config less the PACKABLE knobs and its
    workdir. None for a run that trains alone (one with branches or a teacher)."""
    d = config.to_dict()
    if d["train"].get("branches") or d["train"].get("teacher"):
        return None
    d.pop("seed", None)
    for k in SCALARS:
        d["train"].pop(k, None)
    d["output"].pop("workdir", None)
    return json.dumps(d, sort_keys=True, default=str)


def groups(named_configs: list[tuple[str, object]], pack) -> list[list[str]]:
    """The runs' names in groups that train as one program: runs with one `key`, up to
    `pack` at a time ("auto": all of them, at most AUTO_MAX, split evenly)."""
    by_key: dict = {}
    for name, config in named_configs:
        k = key(config)
        by_key.setdefault(k if k is not None else f"alone:{name}", []).append(name)
    out = []
    for k, names in by_key.items():
        size = 1 if k.startswith("alone:") else (AUTO_MAX if pack == "auto" else int(pack))
        count = math.ceil(len(names) / size)
        out += [names[i::count] for i in range(count)]  # even sizes
    return out


def make_steps(params: steps.Params, t, total: int, vectorize: bool | None = None):
    """(train_step, init_opt) over a leading run axis: train_step(arrays_K, opt_state_K,
    batch_KBT, numbers) with `numbers` = optim.stacked([optim.numbers(...) per run]),
    each run's optimizer built from its own; init_opt(arrays_K, numbers) its optimizer
    states.

    `vectorize`: the runs' step as one batched computation (jax.vmap: what fills an
    accelerator), or one run after another inside the program (jax.lax.map). Default:
    vectorized except on CPU, where bench/pack.py measured the batched matmuls slower
    than K separate ones (docs/results.md, "Numbers behind the code")."""
    if vectorize is None:
        vectorize = jax.default_backend() != "cpu"
    # a copy of `t`: the programs read it when first traced
    return steps.memo(("packed", params.structure, steps.program_key(t, total), vectorize),
                      lambda: _programs(params, copy.deepcopy(t), total, vectorize))


def _programs(params: steps.Params, t, total: int, vectorize: bool):
    one = steps.numbered_step(params, t, total)
    scales = mup.lr_scales(params.spec, params.initial)  # None: standard

    def init(arrays, numbers):
        return optim.optimizer(t, total, scales, numbers).init(arrays)
    options = parallel.compile_options(t.quick_compile)
    if vectorize:
        return (jax.jit(jax.vmap(one), donate_argnums=(0, 1), compiler_options=options),
                jax.jit(jax.vmap(init), compiler_options=options))

    def in_turn(*args):
        return jax.lax.map(lambda xs: one(*xs), args)
    return (jax.jit(in_turn, donate_argnums=(0, 1), compiler_options=options),
            jax.jit(jax.vmap(init), compiler_options=options))


def stack(trees: list, mesh):
    """The runs' trees (parameters, optimizer states) stacked over a leading run axis,
    each array sharded as it was along its own axes; one run's tree as it is."""
    if len(trees) == 1:
        return trees[0]

    def stacked(*xs):
        sharding = xs[0].sharding
        spec = sharding.spec if isinstance(sharding, NamedSharding) else P()
        return jax.device_put(jnp.stack(xs), NamedSharding(mesh, P(None, *spec)))
    return jax.tree.map(stacked, *trees)


def batch(rows: list, mesh) -> jax.Array:
    """The runs' batches (this process's rows of each) as one global array: [K, B, T]
    over a run axis, or one run's [B, T]."""
    if len(rows) == 1:
        return parallel.global_batch(rows[0], mesh)
    sharding = NamedSharding(mesh, P(None, ("data", "fsdp"), None))
    return jax.make_array_from_process_local_data(sharding, np.stack(rows))
