"""The optimizer: AdamW with warmup and a decay schedule, clipping, masked decay, and
µP's per-parameter learning rates (model/mup.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from tinyscale import config as config_lib

FLOATS = ("lr", "b1", "b2", "eps", "weight_decay", "final_lr_ratio")  # train.* knobs


def numbers(t, total_steps: int) -> dict:
    """The optimizer's numbers for train section `t` and a run of `total_steps`: the
    FLOATS as they are, and the schedule's step counts (warmup, decay_steps, cool)
    worked out here, exactly, in Python. A
    compiled step takes them as arguments (steps.make_train_step), so runs that differ
    only in them -- learning rate, Adam's betas, weight decay, budget, warmup, a branch's
    cool-down -- share one program."""
    warmup = min(t.warmup_steps, max(0, total_steps - 1))
    decay_steps = max(1, total_steps - warmup)
    cool = total_steps - config_lib.cooldown_start(total_steps, t.warmup_steps,
                                                   t.decay_fraction)
    return {**{k: float(t[k]) for k in FLOATS}, "warmup": warmup,
            "decay_steps": decay_steps, "cool": cool}


def stacked(values: list[dict]) -> dict:
    """Runs' `numbers` as the arrays a step takes, made once: one run's as scalars,
    several over a leading run axis (packed.py)."""
    one = len(values) == 1
    return {k: jnp.asarray(values[0][k] if one else [v[k] for v in values],
                           jnp.float32 if k in FLOATS else jnp.int32) for k in values[0]}


def schedule(t, total_steps: int, n: dict | None = None) -> optax.Schedule:
    """Linear warmup to train.lr, then constant, cosine or linear decay, or wsd, from the
    `numbers` `n` (those of `t` and `total_steps` when None; traced inside a step).

    wsd (warmup-stable-decay): constant at train.lr, then over the last
    `train.decay_fraction` of the run's steps a (1 - sqrt) cool-down to
    lr x final_lr_ratio, the shape Hagele et al. (2024) found best. Its stable phase does
    not depend on the run's length, so one run's stable phase serves every budget.
    The formulas are optax's (linear_schedule, cosine_decay_schedule, join_schedules),
    written with the step counts as numbers rather than Python constants.
    """
    return _formula(t.schedule, numbers(t, total_steps) if n is None else n)


def _formula(kind: str, n: dict) -> optax.Schedule:
    lr, ratio = n["lr"], n["final_lr_ratio"]
    final, warmup, decay_steps, cool = lr * ratio, n["warmup"], n["decay_steps"], n["cool"]

    def after(step):  # counted from the end of warmup
        if kind == "constant":
            return jnp.full(jnp.shape(step), lr, jnp.float32)
        if kind == "cosine":
            count = jnp.minimum(step, decay_steps)
            cosine = 0.5 * (1 + jnp.cos(jnp.pi * count / decay_steps))
            return lr * ((1 - ratio) * cosine + ratio)
        if kind == "wsd":
            stable = decay_steps - cool
            x = jnp.clip((step - stable) / cool, 0.0, 1.0)
            return jnp.where(step < stable, lr, final + (lr - final) * (1.0 - jnp.sqrt(x)))
        frac = 1 - jnp.clip(step, 0, decay_steps) / decay_steps  # linear
        return (lr - final) * frac + final

    def at(step):
        warm = lr - lr * (1 - jnp.clip(step, 0, warmup) / jnp.maximum(warmup, 1))
        return jnp.where(step < warmup, warm, after(step - warmup))
    return at


def learning_rate(t, total_steps: int):
    """step -> the learning rate at that step (what a run's metrics record): one compiled
    program per schedule kind, its numbers arguments, rather than an eager op per term of
    the formula (~13 programs for every process to compile or load)."""
    n = stacked([numbers(t, total_steps)])
    program = _learning_rate_program(t.schedule)
    return lambda step: program(step, n)


@functools.cache
def _learning_rate_program(kind: str):
    return jax.jit(lambda step, n: _formula(kind, n)(step))


def decay_mask(params):
    """Weight decay on matrices only: not on norms, biases (anything 1-D)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def scale_per_parameter(scales: dict) -> optax.GradientTransformation:
    """Multiply each parameter's update by its own constant (`scales`, keyed like the
    flat parameters): after AdamW, that is its learning rate (and decay) times it."""
    def scale(updates, params=None):
        return {k: u * jnp.asarray(scales[k], u.dtype) for k, u in updates.items()}
    return optax.stateless(scale)


def optimizer(t, total_steps: int, lr_scales: dict | None = None, n: dict | None = None
              ) -> optax.GradientTransformation:
    """AdamW on train.* `t` for a run of `total_steps`, or on the `numbers` `n` (traced
    inside a step); `lr_scales` (model/mup.py's lr_scales: µP) multiply each parameter's
    learning rate. Without them the chain is the one runs always had, so its state (and
    every checkpoint of it) keeps its layout."""
    n = numbers(t, total_steps) if n is None else n
    chain = [optax.clip_by_global_norm(t.grad_clip)] if t.grad_clip else []
    chain.append(optax.adamw(schedule(t, total_steps, n), b1=n["b1"], b2=n["b2"],
                             eps=n["eps"], weight_decay=n["weight_decay"], mask=decay_mask))
    if lr_scales is not None:
        chain.append(scale_per_parameter(lr_scales))
    return optax.chain(*chain)
