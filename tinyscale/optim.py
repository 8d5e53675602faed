"""The optimizer: AdamW with warmup and a decay schedule, clipping, masked decay."""

from __future__ import annotations

import jax
import optax


def schedule(t, total_steps: int) -> optax.Schedule:
    """Linear warmup to train.lr, then constant, cosine or linear decay."""
    warmup = min(t.warmup_steps, max(0, total_steps - 1))
    decay_steps = max(1, total_steps - warmup)
    final = t.lr * t.final_lr_ratio
    if t.schedule == "constant":
        after = optax.constant_schedule(t.lr)
    elif t.schedule == "cosine":
        after = optax.cosine_decay_schedule(t.lr, decay_steps, alpha=t.final_lr_ratio)
    else:
        after = optax.linear_schedule(t.lr, final, decay_steps)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, t.lr, warmup), after], [warmup])


def decay_mask(params):
    """Weight decay on matrices only: not on norms, biases (anything 1-D)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def optimizer(t, total_steps: int) -> optax.GradientTransformation:
    chain = [optax.clip_by_global_norm(t.grad_clip)] if t.grad_clip else []
    chain.append(optax.adamw(schedule(t, total_steps), b1=t.b1, b2=t.b2, eps=t.eps,
                             weight_decay=t.weight_decay, mask=decay_mask))
    return optax.chain(*chain)
