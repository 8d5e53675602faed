"""Mixtral's sparse MLP (`MoE`): a router picks experts_per_token of n_experts per token;
the router's load-balancing and z losses (`router_stats`)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from tinyscale.model import mup
from tinyscale.model.layers import dense, initializers
from tinyscale.model.spec import ModelSpec


class MoE(nnx.Module):
    """Mixtral's sparse MLP: a router picks each token's top-k of n_experts SwiGLU experts
    (softmax over all experts, the top-k weights renormalised to sum to 1).

    Dropless token choice: the N x k assignments are sorted by expert and every expert's
    rows go through one grouped matmul (`jax.lax.ragged_dot`), then are weighted and
    summed back onto their tokens -- no capacity, no token dropped, no dense product over
    all experts. Each call sows (load balance, z, per-expert load) for the losses
    (steps.mean_loss): the balance loss is Switch/Mixtral's E x sum_e f_e P_e (f_e: the
    share of tokens routed to e, summing to k; P_e: the mean router probability), the z
    loss the mean squared log-sum-exp of the router logits (ST-MoE).
    """

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
        self.spec = spec
        e, d, f = spec.n_experts, spec.d_model, spec.d_ff
        dtype = jnp.dtype(spec.param_dtype)
        self.router = dense(spec, d, e, ("embed", None), rngs,
                            std=mup.init_std(spec, 0.02, mup.OUTPUT))

        hidden_std = mup.init_std(spec, 0.02)

        def param(shape, axes, std=hidden_std):
            init = nnx.with_partitioning(initializers.normal(std), axes)
            return nnx.Param(init(rngs.params(), shape, dtype))
        # the expert axis is sharded (parallel.RULES); embed stays whole inside an expert
        self.gate = param((e, d, f), ("expert", None, "mlp"))
        self.up = param((e, d, f), ("expert", None, "mlp"))
        self.down = param((e, f, d), ("expert", "mlp", None),
                          std=mup.init_std(spec, 0.02 / math.sqrt(2 * spec.n_layers)))

    def route(self, x_ND):
        """(router logits [N, E] float32, top-k experts [N, k], their weights [N, k])."""
        logits_NE = self.router(x_ND).astype(jnp.float32)
        top_p_NK, top_e_NK = jax.lax.top_k(jax.nn.softmax(logits_NE), self.spec.experts_per_token)
        return logits_NE, top_e_NK, top_p_NK / top_p_NK.sum(-1, keepdims=True)

    def __call__(self, x_BTD, record: bool = True):
        """`record=False` (generation, inside a scan) sows nothing."""
        b, t, d = x_BTD.shape
        n, k, e = b * t, self.spec.experts_per_token, self.spec.n_experts
        x_ND = x_BTD.reshape(n, d)
        logits_NE, top_e_NK, weights_NK = self.route(x_ND)
        expert_M = top_e_NK.reshape(-1)
        order_M = jnp.argsort(expert_M, stable=True)  # assignments grouped by expert
        token_M = order_M // k
        sizes_E = jnp.bincount(expert_M, length=e).astype(jnp.int32)
        x_MD = x_ND[token_M]
        dtype = x_MD.dtype

        def grouped(a, w):
            return jax.lax.ragged_dot(a, w[...].astype(dtype), sizes_E)
        h_MF = jax.nn.silu(grouped(x_MD, self.gate)) * grouped(x_MD, self.up)
        y_MD = grouped(h_MF, self.down) * weights_NK.reshape(-1)[order_M, None].astype(dtype)
        out_ND = jnp.zeros_like(x_ND).at[token_M].add(y_MD)
        load_E = sizes_E / n  # share of tokens routed to each expert (sums to k)
        balance = e * jnp.sum(load_E * jax.nn.softmax(logits_NE).mean(0))
        z = jnp.mean(jax.nn.logsumexp(logits_NE, axis=-1) ** 2)
        if record:
            self.sow(nnx.Intermediate, "moe", (balance, z, load_E / k))
        return out_ND.reshape(b, t, d)


def router_stats(model) -> dict | None:
    """What the MoE layers sowed in the last call, popped: {"balance": mean over layers,
    "z": mean over layers, "load": [L, E] share of assignments per expert}; None for a
    dense model."""
    sown = [v.get_value()[-1] for _, v in nnx.to_flat_state(nnx.pop(model, nnx.Intermediate))]
    if not sown:
        return None
    balance, z, load = zip(*sown, strict=True)
    return {"balance": jnp.mean(jnp.stack(balance)), "z": jnp.mean(jnp.stack(z)),
            "load": jnp.stack(load)}


def dense_experts(moe: MoE, x_BTD):
    """The MoE layer the slow way -- every expert over every token, weighted by the
    router (zero off the top-k): what the dropless layer must equal (tests)."""
    b, t, d = x_BTD.shape
    x_ND = x_BTD.reshape(b * t, d)
    _, top_e_NK, weights_NK = moe.route(x_ND)
    out = jnp.zeros_like(x_ND)
    for i in range(moe.spec.n_experts):
        h = jax.nn.silu(x_ND @ moe.gate[i]) * (x_ND @ moe.up[i])
        w_N = jnp.sum(jnp.where(top_e_NK == i, weights_NK, 0.0), axis=-1)
        out = out + (h @ moe.down[i]) * w_N[:, None]
    return out.reshape(b, t, d)
