"""A decoder-only transformer in flax NNX, in two families.

* `gpt_neo` — the TinyStories paper's architecture (and Hugging Face GPT-Neo's, so the
  released checkpoints load): learned positions, LayerNorm, GELU MLP, biases on the
  attention output and MLP, attention layers alternating global and local, tied
  embeddings, and GPT-Neo's unscaled attention logits.
* `llama` — llama2.c's stories models: RoPE, RMSNorm, SwiGLU, no biases, optional
  grouped KV heads.
* `phi` — Phi-2's (Hugging Face `PhiForCausalLM`): the parallel block (attention and
  MLP read one LayerNorm's output and are summed into the residual), RoPE on the first
  `rotary_fraction` of each head's dims, GELU MLP, biases everywhere, an untied output
  projection with a bias.

`parallel_block` puts any family's blocks in the parallel form (one norm per block).

Every parameter carries logical axis names (`vocab`, `embed`, `heads`, `kv`, `mlp`);
`parallel.py` maps them onto the mesh. Tensor names carry their shapes:
B batch, T time, D d_model, H heads, K kv heads, E head size, F d_ff, V vocab.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tinyscale.model import mup
from tinyscale.model.attention import Attention
from tinyscale.model.layers import MLP, dense, initializers, make_norm
from tinyscale.model.moe import MoE
from tinyscale.model.spec import ModelSpec


class Block(nnx.Module):
    def __init__(self, spec: ModelSpec, layer: int, *, rngs: nnx.Rngs):
        self.parallel = spec.parallel_block
        self.norm_attn = make_norm(spec, rngs)
        self.attn = Attention(spec, layer, rngs=rngs)
        if not self.parallel:  # the parallel block reads norm_attn's output twice
            self.norm_mlp = make_norm(spec, rngs)
        self.mlp = MoE(spec, rngs=rngs) if spec.n_experts else MLP(spec, rngs=rngs)

    def __call__(self, x_BTD, positions_BT, cache=None):
        dtype = x_BTD.dtype
        normed_BTD = self.norm_attn(x_BTD).astype(dtype)
        attended = self.attn(normed_BTD, positions_BT, cache)
        if cache is not None:
            attended, cache = attended
        mlp = self.mlp if not isinstance(self.mlp, MoE) else \
            (lambda x: self.mlp(x, record=cache is None))
        if self.parallel:  # x + attn(norm(x)) + mlp(norm(x))
            x_BTD = x_BTD + attended + mlp(normed_BTD)
        else:
            x_BTD = x_BTD + attended
            x_BTD = x_BTD + mlp(self.norm_mlp(x_BTD).astype(dtype))
        return x_BTD if cache is None else (x_BTD, cache)


class Transformer(nnx.Module):
    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
        self.spec = spec = spec.on()  # the compute dtype and attention of this device
        pdtype = jnp.dtype(spec.param_dtype)
        self.embed = nnx.Embed(
            spec.vocab_size, spec.d_model, dtype=jnp.dtype(spec.dtype), param_dtype=pdtype,
            embedding_init=nnx.with_partitioning(initializers.normal(0.02), ("vocab", "embed")),
            rngs=rngs)
        if spec.family == "gpt_neo":
            self.positions = nnx.Embed(
                spec.max_seq_len, spec.d_model, dtype=jnp.dtype(spec.dtype),
                param_dtype=pdtype, rngs=rngs,
                embedding_init=nnx.with_partitioning(initializers.normal(0.02), (None, "embed")))
        self.blocks = nnx.List([Block(spec, i, rngs=rngs) for i in range(spec.n_layers)])
        self.norm = make_norm(spec, rngs)
        if not spec.tie_embeddings:
            self.head = dense(spec, spec.d_model, spec.vocab_size, ("embed", "vocab"), rngs,
                               bias=spec.family == "phi")

    def __call__(self, tokens_BT: jax.Array, positions_BT: jax.Array | None = None,
                 caches: list | None = None):
        """Logits (float32) for every position: [B, T, V].

        With `caches` (one per layer, from `init_caches`), the tokens are appended to
        the KV caches and (logits, new caches) is returned.
        """
        x_BTD = self.features(tokens_BT, positions_BT, caches)
        if caches is not None:
            x_BTD, new_caches = x_BTD
        w_VD, bias_V = self.output_projection()
        logits_BTV = jnp.einsum("btd,vd->btv", x_BTD, w_VD.astype(x_BTD.dtype))
        if bias_V is not None:
            logits_BTV = logits_BTV + bias_V.astype(logits_BTV.dtype)
        logits_BTV = logits_BTV.astype(jnp.float32)
        return logits_BTV if caches is None else (logits_BTV, new_caches)

    def features(self, tokens_BT: jax.Array, positions_BT: jax.Array | None = None,
                 caches: list | None = None):
        """The final normed hidden states [B, T, D] that the output projection reads
        (and the new caches, with `caches`)."""
        if positions_BT is None:
            positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
        x_BTD = self.embed(tokens_BT)
        if self.spec.family == "gpt_neo":
            x_BTD = x_BTD + self.positions(jnp.maximum(positions_BT, 0))
        new_caches = []
        for i, block in enumerate(self.blocks):
            if caches is None:
                x_BTD = block(x_BTD, positions_BT)
            else:
                x_BTD, cache = block(x_BTD, positions_BT, caches[i])
                new_caches.append(cache)
        x_BTD = self.norm(x_BTD).astype(x_BTD.dtype)
        return x_BTD if caches is None else (x_BTD, new_caches)

    def output_projection(self) -> tuple[jax.Array, jax.Array | None]:
        """(W [V, D], bias [V] or None): logits = x W^T + bias. Tied: the embedding.
        Under µP, W carries the output multiplier 1 / m (model/mup.py): every reader of
        the logits -- the fused cross-entropy, distillation, sampling -- applies it."""
        if self.spec.tie_embeddings:
            w_VD, bias_V = self.embed.embedding[...], None
        else:
            bias_V = self.head.bias[...] if self.head.bias is not None else None
            w_VD = self.head.kernel[...].T
        multiplier = mup.output_multiplier(self.spec)
        if multiplier is not None:
            w_VD = w_VD * jnp.asarray(multiplier, w_VD.dtype)
        return w_VD, bias_V


def init_caches(spec: ModelSpec, pad_B: jax.Array, length: int) -> list[dict]:
    """Empty KV caches of `length` slots for rows left-padded by `pad_B` tokens; a local
    layer's holds min(length, window) slots (a ring: Attention._rolling)."""
    def empty(slots):
        zeros = jnp.zeros((pad_B.shape[0], slots, spec.n_kv_heads, spec.head_size),
                          jnp.dtype(spec.dtype))
        return {"k": zeros, "v": zeros, "pad": pad_B, "index": jnp.int32(0)}
    return [empty(min(length, spec.window_size) if kind == "local" else length)
            for kind in spec.attention_types]
