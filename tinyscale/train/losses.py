"""The training losses: cross-entropy fused with the output projection (logits never
exist in full), and distillation's KL to a teacher (`Teacher`, `kl`; train/distill.py
loads the teacher).

The mean next-token cross-entropy of hidden states x [B, T, D] under the output
projection W [V, D] (+ bias) is computed over chunks of T: each chunk's logits, their
log-sum-exp, the loss, and, when differentiated, the gradients: dlogits = softmax - 1_y,
dx = dlogits W, dW += dlogits^T x. All of it runs while the chunk's logits are in cache,
so the [B, T, V] logits (128 MiB at B 32, T 256, V 4096) are never written to memory,
log-softmaxed, read back and re-read in the backward pass. The gradients come out of
the forward pass (the loss is a mean, so the upstream gradient only scales them) and
the output matmul is not recomputed (its speed-up: docs/results.md, "Numbers behind the
code"); the values match the unfused loss to float rounding (tests/test_cross_entropy.py).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

# Rows (tokens) per chunk and device on CPU, the fastest measured (docs/results.md,
# "Numbers behind the code").
CPU_CHUNK_ROWS = 512


def _chunk_length(b: int, t: int, v: int) -> int:
    """How many positions of T each chunk holds: about a target number of rows (tokens)
    per device, and a divisor of T."""
    mesh = jax.sharding.get_abstract_mesh()
    shards = 1 if mesh.empty else mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)
    rows_per_device = CPU_CHUNK_ROWS if jax.default_backend() == "cpu" else max(4096, 2**24 // v)
    want = max(1, rows_per_device * shards // b)
    return max(d for d in range(1, t + 1) if t % d == 0 and d <= want)


def _chunks(x_BTD, targets_BT, tc: int):
    b, t = targets_BT.shape
    n = t // tc
    x_NBCD = x_BTD.reshape(b, n, tc, -1).swapaxes(0, 1)
    return x_NBCD, targets_BT.reshape(b, n, tc).swapaxes(0, 1)


def _chunk_loss(x_BCD, targets_BC, w_VD, bias_V):
    logits_BCV = jnp.einsum("bcd,vd->bcv", x_BCD, w_VD, preferred_element_type=jnp.float32)
    if bias_V is not None:
        logits_BCV = logits_BCV + bias_V.astype(jnp.float32)
    top_BC1 = jax.lax.stop_gradient(logits_BCV.max(-1, keepdims=True))
    exp_BCV = jnp.exp(logits_BCV - top_BC1)
    sum_BC1 = exp_BCV.sum(-1, keepdims=True)
    is_target = jnp.arange(logits_BCV.shape[-1]) == targets_BC[..., None]
    target_BC = jnp.sum(jnp.where(is_target, logits_BCV, 0.0), -1)
    loss = jnp.sum(jnp.log(sum_BC1[..., 0]) + top_BC1[..., 0] - target_BC)
    return loss, exp_BCV, sum_BC1, is_target


def _forward(x_BTD, w_VD, bias_V, targets_BT, with_grads: bool):
    b, t = targets_BT.shape
    tc = _chunk_length(b, t, w_VD.shape[0])
    x_NBCD, targets_NBC = _chunks(x_BTD, targets_BT, tc)
    scale = 1.0 / (b * t)

    def body(carry, xs):
        x_BCD, targets_BC = xs
        loss, exp_BCV, sum_BC1, is_target = _chunk_loss(x_BCD, targets_BC, w_VD, bias_V)
        if not with_grads:
            return carry, loss
        dlogits_BCV = (exp_BCV * (scale / sum_BC1) - jnp.where(is_target, scale, 0.0))
        dw_DV, dbias_V = carry
        # as dW^T = x^T dlogits: the small x is what gets transposed, not the logits
        dw_DV = dw_DV + jnp.einsum("bcd,bcv->dv", x_BCD.astype(jnp.float32), dlogits_BCV)
        if dbias_V is not None:
            dbias_V = dbias_V + dlogits_BCV.sum((0, 1))
        dx_BCD = jnp.einsum("bcv,vd->bcd", dlogits_BCV, w_VD.astype(jnp.float32))
        return (dw_DV, dbias_V), (loss, dx_BCD.astype(x_BCD.dtype))

    zeros = (jnp.zeros(w_VD.shape[::-1], jnp.float32),
             None if bias_V is None else jnp.zeros(bias_V.shape, jnp.float32))
    carry, out = jax.lax.scan(body, zeros, (x_NBCD, targets_NBC))
    if not with_grads:
        return out.sum() * scale
    losses, dx_NBCD = out
    dx_BTD = dx_NBCD.swapaxes(0, 1).reshape(x_BTD.shape)
    dw_DV, dbias_V = carry
    return losses.sum() * scale, (dx_BTD, dw_DV.T, dbias_V)


@jax.custom_vjp
def mean_cross_entropy(x_BTD, w_VD, bias_V, targets_BT):
    """Mean over all positions of -log softmax(x W^T + bias)[target]; bias may be None."""
    return _forward(x_BTD, w_VD, bias_V, targets_BT, with_grads=False)


def _fwd(x_BTD, w_VD, bias_V, targets_BT):
    loss, (dx_BTD, dw_VD, dbias_V) = _forward(x_BTD, w_VD, bias_V, targets_BT, True)
    if dbias_V is not None:
        dbias_V = dbias_V.astype(bias_V.dtype)
    return loss, (dx_BTD, dw_VD.astype(w_VD.dtype), dbias_V)


def _bwd(grads, g):
    """The gradients were computed in the forward pass; the upstream gradient scales them."""
    scaled = jax.tree.map(lambda d: (g * d).astype(d.dtype), grads)
    return (*scaled, None)


mean_cross_entropy.defvjp(_fwd, _bwd)


@dataclasses.dataclass(frozen=True)
class Teacher:
    params: object          # steps.Params of the teacher's shape (hashable by identity)
    arrays: dict            # its parameters, on the student's mesh
    weight: float
    temperature: float
    run: str                # the teacher's run directory
    flops_per_token: float  # its forward pass, per token


def kl(student_x_BTD, w_VD, bias_V, teacher_logits_BTV, temperature: float) -> jax.Array:
    """Mean over tokens of KL(softmax(teacher / T) || softmax(student / T))."""
    logits_BTV = jnp.einsum("btd,vd->btv", student_x_BTD, w_VD,
                            preferred_element_type=jnp.float32)
    if bias_V is not None:
        logits_BTV = logits_BTV + bias_V.astype(jnp.float32)
    student_BTV = jax.nn.log_softmax(logits_BTV / temperature)
    teacher_BTV = jax.nn.log_softmax(
        jax.lax.stop_gradient(teacher_logits_BTV).astype(jnp.float32) / temperature)
    per_token = jnp.sum(jnp.exp(teacher_BTV) * (teacher_BTV - student_BTV), axis=-1)
    return per_token.mean()
