"""The layers every family shares: dense projections with logical axis names, norms, the
MLP (GELU or SwiGLU)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from tinyscale.model import mup
from tinyscale.model.spec import ModelSpec

initializers = nnx.initializers


def dense(spec, d_in, d_out, axes, rngs, bias=False, std=0.02):
    return nnx.Linear(
        d_in, d_out, use_bias=bias, dtype=jnp.dtype(spec.dtype),
        param_dtype=jnp.dtype(spec.param_dtype),
        kernel_init=nnx.with_partitioning(initializers.normal(std), axes),
        bias_init=nnx.with_partitioning(initializers.zeros, axes[1:]), rngs=rngs)


def make_norm(spec, rngs):
    axes = ("embed",)
    kwargs = dict(epsilon=spec.norm_eps, dtype=jnp.float32,
                  param_dtype=jnp.dtype(spec.param_dtype), rngs=rngs,
                  scale_init=nnx.with_partitioning(initializers.ones, axes))
    if spec.family == "llama":
        return nnx.RMSNorm(spec.d_model, **kwargs)
    return nnx.LayerNorm(spec.d_model, bias_init=nnx.with_partitioning(initializers.zeros, axes),
                         **kwargs)


class MLP(nnx.Module):
    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
        self.gated = spec.family == "llama"
        bias, std = not self.gated, mup.init_std(spec, 0.02)
        std_out = mup.init_std(spec, 0.02 / math.sqrt(2 * spec.n_layers))
        self.up = dense(spec, spec.d_model, spec.d_ff, ("embed", "mlp"), rngs, bias=bias,
                        std=std)
        if self.gated:
            self.gate = dense(spec, spec.d_model, spec.d_ff, ("embed", "mlp"), rngs, std=std)
        self.down = dense(spec, spec.d_ff, spec.d_model, ("mlp", "embed"), rngs, bias=bias,
                           std=std_out)

    def __call__(self, x_BTD):
        if self.gated:
            return self.down(jax.nn.silu(self.gate(x_BTD)) * self.up(x_BTD))
        return self.down(jax.nn.gelu(self.up(x_BTD), approximate=True))  # GPT-Neo gelu_new
