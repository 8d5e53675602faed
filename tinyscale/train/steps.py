"""The jitted train and eval steps over the model's flat arrays (model/params.py).

Parameters travel as a flat dict {"blocks/0/attn/query/kernel": array}: plain jax.jit
over it has less Python overhead than nnx.jit for small models, and orbax saves it
as is. `Params.model(arrays)` rebuilds the NNX module inside a trace.
"""

from __future__ import annotations

import copy
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from tinyscale import parallel
from tinyscale.model import mup
from tinyscale.model.moe import router_stats
from tinyscale.model.params import Params  # also steps.Params, as the trainer reads it
from tinyscale.train import losses, optim
from tinyscale.train.losses import mean_cross_entropy


def token_losses(model, batch_BT: jax.Array) -> jax.Array:
    """Next-token negative log-likelihood at every position: [B, T-1]."""
    logits_BTV = model(batch_BT[:, :-1])
    logp_BTV = jax.nn.log_softmax(logits_BTV)
    # A one-hot product, not take_along_axis: the gradient of a gather is a scatter,
    # which XLA on CPU runs slowly (docs/results.md, "Numbers behind the code").
    targets_BTV = jax.nn.one_hot(batch_BT[:, 1:], logits_BTV.shape[-1], dtype=logp_BTV.dtype)
    return -jnp.sum(logp_BTV * targets_BTV, axis=-1)


def mean_loss(model, batch_BT: jax.Array, aux_coef: float = 0.0, z_coef: float = 0.0,
              teacher_logits_BTV: jax.Array | None = None, weight: float = 0.0,
              temperature: float = 1.0):
    """(training loss, metrics): token_losses(...).mean() -- with the output projection
    fused into the cross-entropy (tinyscale/train/losses.py) -- mixed, given a teacher's
    logits, with the distillation term (tinyscale/train/distill.py) as weight : 1 - weight;
    plus, for a mixture of experts, aux_coef x load balance + z_coef x router z-loss.
    Metrics: "loss" (the cross-entropy alone, comparable across models), "distill_kl",
    and the router's "moe_balance", "moe_z" and "expert_load" [layers, experts]."""
    x_BTD = model.features(batch_BT[:, :-1])
    w_VD, bias_V = model.output_projection()
    loss = mean_cross_entropy(x_BTD, w_VD, bias_V, batch_BT[:, 1:])
    total, out = loss, {"loss": loss}
    if teacher_logits_BTV is not None:
        out["distill_kl"] = kl = losses.kl(x_BTD, w_VD, bias_V, teacher_logits_BTV,
                                            temperature)
        total = weight * temperature ** 2 * kl + (1.0 - weight) * loss
    stats = router_stats(model)
    if stats is None:
        return total, out
    total = total + aux_coef * stats["balance"] + z_coef * stats["z"]
    return total, {**out, "moe_balance": stats["balance"], "moe_z": stats["z"],
                   "expert_load": stats["load"]}


def step_fn(params: Params, grad_accum: int, teacher: losses.Teacher | None = None):
    """The train step, not jitted: (arrays, opt_state, batch_BT, tx, teacher_arrays) ->
    (arrays, opt_state, {"loss", "grad_norm", ...}); numbered_step builds `tx` inside it
    from traced numbers.
    With a `teacher`, its parameters come in as `teacher_arrays`."""
    m, model = params.spec, params.model  # not `params`: its arrays stay the caller's
    coefs = (m.router_aux_coef, m.router_z_coef) if m.n_experts else (0.0, 0.0)

    def loss_fn(arrays, batch_BT, teacher_arrays):
        if teacher is None:
            return mean_loss(model(arrays), batch_BT, *coefs)
        logits_BTV = teacher.params.model(teacher_arrays)(batch_BT[:, :-1])  # inference
        return mean_loss(model(arrays), batch_BT, *coefs, logits_BTV,
                         teacher.weight, teacher.temperature)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(arrays, opt_state, batch_BT, tx, teacher_arrays=None):
        if grad_accum == 1:
            (_, out), grads = grad_fn(arrays, batch_BT, teacher_arrays)
        else:  # micro-batch i takes rows i, i+A, ...: every shard contributes to each
            b, t = batch_BT.shape
            micro = batch_BT.reshape(b // grad_accum, grad_accum, t).swapaxes(0, 1)

            def accumulate(carry, micro_BT):
                (_, out), grads = grad_fn(arrays, micro_BT, teacher_arrays)
                return jax.tree.map(jnp.add, carry, (out, grads)), None

            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
                grad_fn, arrays, micro[0], teacher_arrays))
            (out, grads), _ = jax.lax.scan(accumulate, (zeros[0][1], zeros[1]), micro)
            out, grads = jax.tree.map(lambda x: x / grad_accum, (out, grads))
        updates, opt_state = tx.update(grads, opt_state, arrays)
        arrays = optax.apply_updates(arrays, updates)
        return arrays, opt_state, {**out, "grad_norm": optax.global_norm(grads)}

    return step


def numbered_step(params: Params, t, total: int, teacher: losses.Teacher | None = None):
    """The train step over the optimizer's numbers, not jitted: (arrays, opt_state,
    batch_BT, numbers, teacher_arrays=None) -> (arrays, opt_state, metrics), AdamW on
    train.* `t` (µP's per-parameter rates included) for a run of `total` steps, built
    from `numbers` (optim.numbers: learning rate, betas, budget, warmup...). They are
    arguments, not constants of the program: runs that differ only in them share it.
    make_train_step jits it; tinyscale/train/packed.py maps it over runs."""
    step = step_fn(params, t.grad_accum, teacher)
    scales = mup.lr_scales(params.spec, params.initial)  # None: standard

    def train_step(arrays, opt_state, batch_BT, numbers, teacher_arrays=None):
        return step(arrays, opt_state, batch_BT,
                    optim.optimizer(t, total, scales, numbers), teacher_arrays)
    return train_step


# The jitted steps this process has built, by what their programs depend on (memo): a
# process that trains or evaluates several runs of one shape -- a sweep worker's runs,
# seeds, `eval` after `train` in one process -- traces and compiles each program once,
# not once per run (from the compilation cache, a program is still traced and lowered).
_PROGRAMS: dict = {}
_KEEP = 32


def memo(key, build):
    """build(), made once per `key` in this process (the newest _KEEP kept)."""
    if key not in _PROGRAMS:
        if len(_PROGRAMS) >= _KEEP:
            del _PROGRAMS[next(iter(_PROGRAMS))]
        _PROGRAMS[key] = build()
    return _PROGRAMS[key]


def program_key(t, total: int) -> str:
    """What a step's program over train section `t` may depend on: all of `t` but the
    numbers the step takes as arguments (optim.FLOATS), and the run's length."""
    d = {k: v for k, v in t.to_dict().items() if k not in optim.FLOATS}
    return json.dumps([d, total], sort_keys=True, default=str)


def make_train_step(params: Params, t, total: int, teacher: losses.Teacher | None = None):
    """The jitted numbered_step: (arrays, opt_state, batch_BT, numbers) -> (arrays,
    opt_state, metrics); `numbers` best made once (optim.stacked([optim.numbers(...)])).
    Without a teacher, one per shape and program_key in a process (memo)."""
    options = parallel.compile_options(t.quick_compile)
    if teacher is None:  # a copy of `t`: the program reads it when first traced
        return memo(("train", params.structure, program_key(t, total)), lambda: jax.jit(
            numbered_step(params, copy.deepcopy(t), total), donate_argnums=(0, 1),
            compiler_options=options))
    jitted = jax.jit(numbered_step(params, t, total, teacher), donate_argnums=(0, 1),
                     compiler_options=options)
    return lambda arrays, opt_state, batch_BT, numbers: jitted(
        arrays, opt_state, batch_BT, numbers, teacher_arrays=teacher.arrays)


def make_eval_step(params: Params, quick_compile: bool):
    """(arrays, batch_BT) -> each sequence's mean token loss; one per shape in a process
    (and train.quick_compile: `quick_compile`)."""
    model = params.model

    def build():
        def step(arrays, batch_BT):
            return token_losses(model(arrays), batch_BT).mean(axis=1)  # per sequence
        return jax.jit(step, compiler_options=parallel.compile_options(quick_compile))
    return memo(("eval", params.structure, quick_compile), build)


def held_out(eval_step, arrays, batches, n_batches: int, mesh,
             bytes_per_token: float) -> tuple[float, float, float]:
    """(loss, bits per byte, standard error of the loss over sequences) on the first
    `n_batches` fixed held-out batches."""

    def gathered(x):  # a batch split over hosts: every process needs every sequence
        return np.asarray(x) if x.is_fully_addressable else \
            multihost_utils.process_allgather(x, tiled=True)
    per_sequence = np.concatenate([
        gathered(eval_step(arrays, parallel.global_batch(batches.eval_batch(i), mesh)))
        for i in range(n_batches)])
    loss = float(per_sequence.mean())
    se = float(per_sequence.std(ddof=1) / math.sqrt(len(per_sequence))) \
        if len(per_sequence) > 1 else 0.0
    return loss, loss / math.log(2) / bytes_per_token, se
