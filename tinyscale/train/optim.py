"""The optimizer: AdamW with warmup and a decay schedule, clipping, masked decay, and
µP's per-parameter learning rates (model/mup.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from tinyscale import config as config_lib


def schedule(t, total_steps: int) -> optax.Schedule:
    """Linear warmup to train.lr, then constant, cosine or linear decay, or wsd.

    wsd (warmup-stable-decay): constant at train.lr, then over the last
    `train.decay_fraction` of the run's steps a (1 - sqrt) cool-down to
    lr x final_lr_ratio, the shape Hagele et al. (2024) found best. Its stable phase does
    not depend on the run's length, so one run's stable phase serves every budget.
    """
    warmup = min(t.warmup_steps, max(0, total_steps - 1))
    decay_steps = max(1, total_steps - warmup)
    final = t.lr * t.final_lr_ratio
    if t.schedule == "constant":
        after = optax.constant_schedule(t.lr)
    elif t.schedule == "cosine":
        after = optax.cosine_decay_schedule(t.lr, decay_steps, alpha=t.final_lr_ratio)
    elif t.schedule == "wsd":
        cool = total_steps - config_lib.cooldown_start(total_steps, t.warmup_steps,
                                                       t.decay_fraction)

        def cooldown(step):
            x = jnp.clip(step / cool, 0.0, 1.0)
            return final + (t.lr - final) * (1.0 - jnp.sqrt(x))
        after = optax.join_schedules([optax.constant_schedule(t.lr), cooldown],
                                     [decay_steps - cool])
    else:
        after = optax.linear_schedule(t.lr, final, decay_steps)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, t.lr, warmup), after], [warmup])


def decay_mask(params):
    """Weight decay on matrices only: not on norms, biases (anything 1-D)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def scale_per_parameter(scales: dict) -> optax.GradientTransformation:
    """Multiply each parameter's update by its own constant (`scales`, keyed like the
    flat parameters): after AdamW, that is its learning rate (and decay) times it."""
    def scale(updates, params=None):
        return {k: u * jnp.asarray(scales[k], u.dtype) for k, u in updates.items()}
    return optax.stateless(scale)


def optimizer(t, total_steps: int, lr_scales: dict | None = None
              ) -> optax.GradientTransformation:
    """AdamW on train.* `t`; `lr_scales` (model/mup.py's lr_scales: µP) multiply each
    parameter's learning rate. Without them the chain is the one runs always had, so
    its state (and every checkpoint of it) keeps its layout."""
    chain = [optax.clip_by_global_norm(t.grad_clip)] if t.grad_clip else []
    chain.append(optax.adamw(schedule(t, total_steps), b1=t.b1, b2=t.b2, eps=t.eps,
                             weight_decay=t.weight_decay, mask=decay_mask))
    if lr_scales is not None:
        chain.append(scale_per_parameter(lr_scales))
    return optax.chain(*chain)
