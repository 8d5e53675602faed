"""Attention: RoPE; causal (global or sliding-window local) attention by one of three
implementations (`attend`, chosen by model.attention: model/spec.py) -- xla, query
blocks in plain XLA (any device); cudnn, jax.nn.dot_product_attention's cuDNN flash
kernel (GPU); splash, the Pallas splash kernel (TPU) -- and the attention layer with
grouped KV heads and a KV cache for decoding (always xla: one query at a time)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks
from jax.sharding import PartitionSpec as P

from tinyscale.model import mup
from tinyscale.model.layers import dense
from tinyscale.model.spec import ModelSpec
from tinyscale.parallel import AXES

ATTENTION_BLOCK = 64  # query block of causal_attention (see its docstring)
SPLASH_BLOCK = 128  # splash's blocks (BlockSizes.get_default(), TPU lanes): T % 128 == 0


def rope(x_BTHE: jax.Array, positions_BT: jax.Array, theta: float,
         dims: int | None = None) -> jax.Array:
    """Rotary position embedding, rotate-half convention (as Hugging Face Llama), on the
    first `dims` of each head's dims (all by default; Phi rotates a share of them)."""
    if dims is not None and dims < x_BTHE.shape[-1]:
        return jnp.concatenate([rope(x_BTHE[..., :dims], positions_BT, theta),
                                x_BTHE[..., dims:]], axis=-1)
    half = x_BTHE.shape[-1] // 2
    freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_BTE = positions_BT[..., None].astype(jnp.float32) * freqs
    cos, sin = jnp.cos(angles_BTE)[:, :, None], jnp.sin(angles_BTE)[:, :, None]
    x1, x2 = x_BTHE[..., :half].astype(jnp.float32), x_BTHE[..., half:].astype(jnp.float32)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTHE.dtype)


def visible(queries, keys, window: int | None):
    """Which keys each query may attend to: not later, and inside the local window."""
    allowed = keys <= queries
    return allowed & (queries - keys < window) if window else allowed


def masked_attention(q_BKGTE, k_BKSE, v_BKSE, allowed, scale: float) -> jax.Array:
    """softmax(q k^T * scale, where allowed) v, with heads grouped by KV head (K x G);
    `allowed` broadcasts against [B, K, G, T, S]. Scores are computed in float32."""
    logits = jnp.einsum("bkgte,bkse->bkgts", q_BKGTE, k_BKSE,
                        preferred_element_type=jnp.float32) * scale
    logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v_BKSE.dtype)
    return jnp.einsum("bkgts,bkse->bkgte", probs, v_BKSE)


def causal_attention(q_BTHE, k_BTKE, v_BTKE, scale: float, window: int | None = None,
                     block: int = ATTENTION_BLOCK) -> jax.Array:
    """Causal self-attention (local when `window` is set: i - j < window), by query blocks.

    Query block [s0, s1) reads only keys [s0 - window + 1 or 0, s1): the scores it could
    never see are not computed: 5/8 of the score matrix at T = 4 * block, tending to 1/2
    as T grows; the block size was chosen by measurement (docs/results.md, "Numbers
    behind the code"). Heads are moved ahead of time first, so every product is a plain
    batched matmul. The values equal `jax.nn.dot_product_attention`'s up to float
    rounding (tests/test_model.py); the speed against it: docs/performance.md.
    """
    b, t, h, e = q_BTHE.shape
    kv = k_BTKE.shape[2]
    q_BKGTE = q_BTHE.reshape(b, t, kv, h // kv, e).transpose(0, 2, 3, 1, 4)
    k_BKSE, v_BKSE = k_BTKE.transpose(0, 2, 1, 3), v_BTKE.transpose(0, 2, 1, 3)
    outs = []
    for s0 in range(0, t, block):
        s1 = min(s0 + block, t)
        k0 = max(0, s0 - window + 1) if window else 0
        allowed_TS = visible(jnp.arange(s0, s1)[:, None], jnp.arange(k0, s1)[None, :], window)
        outs.append(masked_attention(q_BKGTE[:, :, :, s0:s1], k_BKSE[:, :, k0:s1],
                                     v_BKSE[:, :, k0:s1], allowed_TS, scale))
    out_BKGTE = jnp.concatenate(outs, axis=3) if len(outs) > 1 else outs[0]
    return out_BKGTE.transpose(0, 3, 1, 2, 4).reshape(b, t, h, e)


def fused_attention(q_BTHE, k_BTKE, v_BTKE, scale: float, window: int | None = None,
                    implementation: str = "cudnn") -> jax.Array:
    """Causal attention by jax.nn.dot_product_attention: `implementation` cudnn is cuDNN's
    flash kernel (GPU, bfloat16); xla the same call in plain XLA on any device (what the
    CPU tests run, so the window and GQA conventions here are tested without a GPU)."""
    local = (window - 1, 0) if window else None  # i - j < window: window - 1 keys back
    return jax.nn.dot_product_attention(q_BTHE, k_BTKE, v_BTKE, scale=scale, is_causal=True,
                                        local_window_size=local,
                                        implementation=implementation)


@functools.lru_cache(maxsize=64)
def _splash_kernel(t: int, groups: int, window: int | None, interpret: bool):
    """The splash kernel of one KV head and its `groups` query heads, [G, T, E] x [T, E]."""
    mask = masks.LocalMask((t, t), (window - 1, 0), 0) if window else masks.CausalMask((t, t))
    return splash.make_splash_mqa(masks.MultiHeadMask([mask] * groups),
                                  block_sizes=splash.BlockSizes.get_default(),
                                  head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q_BTHE, k_BTKE, v_BTKE, scale: float, window: int | None = None,
                     mesh=None, interpret: bool = False) -> jax.Array:
    """Causal attention by the Pallas splash kernel (TPU; `interpret` runs it on any
    device, slowly: the tests). A sequence that is not a multiple of SPLASH_BLOCK goes
    to causal_attention. Grouped KV heads are the kernel's MQA form per KV head. On a
    mesh of several devices the kernel runs per shard (shard_map: batch over data x
    fsdp, KV heads over tensor), as XLA cannot split a kernel call itself."""
    b, t, h, e = q_BTHE.shape
    kv = k_BTKE.shape[2]
    if t % SPLASH_BLOCK:
        return causal_attention(q_BTHE, k_BTKE, v_BTKE, scale, window)
    kernel = jax.vmap(jax.vmap(_splash_kernel(t, h // kv, window, interpret)))  # B, K
    q_BKGTE = q_BTHE.reshape(b, t, kv, h // kv, e).transpose(0, 2, 3, 1, 4)
    if scale != 1.0:  # the kernel does not scale its logits
        q_BKGTE = q_BKGTE * jnp.asarray(scale, q_BKGTE.dtype)
    k_BKSE, v_BKSE = k_BTKE.transpose(0, 2, 1, 3), v_BTKE.transpose(0, 2, 1, 3)
    if mesh is not None and mesh.size > 1:
        spec = P(AXES[:2], AXES[2])
        kernel = jax.shard_map(kernel, mesh=mesh, in_specs=(spec,) * 3, out_specs=spec,
                               check_vma=False)
    out_BKGTE = kernel(q_BKGTE, k_BKSE, v_BKSE)
    return out_BKGTE.transpose(0, 3, 1, 2, 4).reshape(b, t, h, e)


def attend(q_BTHE, k_BTKE, v_BTKE, scale: float, window: int | None, implementation: str,
           mesh=None) -> jax.Array:
    """Causal attention by `implementation` (spec.attention, resolved: ModelSpec.on)."""
    if implementation == "cudnn":
        return fused_attention(q_BTHE, k_BTKE, v_BTKE, scale, window, "cudnn")
    if implementation == "splash":
        return splash_attention(q_BTHE, k_BTKE, v_BTKE, scale, window, mesh)
    return causal_attention(q_BTHE, k_BTKE, v_BTKE, scale, window)


class Attention(nnx.Module):
    def __init__(self, spec: ModelSpec, layer: int, *, rngs: nnx.Rngs):
        self.spec, self.local = spec, spec.attention_types[layer] == "local"
        d, h, k, e = spec.d_model, spec.n_heads, spec.n_kv_heads, spec.head_size
        qkv_bias, std = spec.family == "phi", mup.init_std(spec, 0.02)
        self.query = dense(spec, d, h * e, ("embed", "heads"), rngs, bias=qkv_bias, std=std)
        self.key = dense(spec, d, k * e, ("embed", "kv"), rngs, bias=qkv_bias, std=std)
        self.value = dense(spec, d, k * e, ("embed", "kv"), rngs, bias=qkv_bias, std=std)
        self.out = dense(spec, h * e, d, ("heads", "embed"), rngs,
                          bias=spec.family in ("gpt_neo", "phi"),
                          std=mup.init_std(spec, 0.02 / math.sqrt(2 * spec.n_layers)))
        # splash runs per shard: the mesh the model is built under (parallel.using)
        self.mesh = jax.sharding.get_abstract_mesh() if spec.attention == "splash" else None

    def __call__(self, x_BTD, positions_BT, cache=None):
        s = self.spec
        b, t, _ = x_BTD.shape
        q_BTHE = self.query(x_BTD).reshape(b, t, s.n_heads, s.head_size)
        k_BTKE = self.key(x_BTD).reshape(b, t, s.n_kv_heads, s.head_size)
        v_BTKE = self.value(x_BTD).reshape(b, t, s.n_kv_heads, s.head_size)
        if s.rotary_dims:
            q_BTHE = rope(q_BTHE, positions_BT, s.rope_theta, s.rotary_dims)
            k_BTKE = rope(k_BTKE, positions_BT, s.rope_theta, s.rotary_dims)
        scale = mup.attention_scale(s)  # 1/sqrt(E); GPT-Neo: 1; µP: 1/E
        if cache is not None:
            cached = self._rolling if self.local else self._cached
            out_BTHE, cache = cached(q_BTHE, k_BTKE, v_BTKE, positions_BT, scale, cache)
            return self.out(out_BTHE.reshape(b, t, -1)), cache
        window = s.window_size if self.local else None
        out_BTHE = attend(q_BTHE, k_BTKE, v_BTKE, scale, window, s.attention, self.mesh)
        return self.out(out_BTHE.reshape(b, t, -1))

    def _cached(self, q_BTHE, k_BTKE, v_BTKE, positions_BT, scale, cache):
        """Attention over a KV cache: write the new keys at `index`, attend to all slots.

        Slot j of row b holds position j - pad[b] (prompts are left-padded), so the
        mask needs only positions: 0 <= key <= query (and inside a local window).
        """
        k_BSKE = jax.lax.dynamic_update_slice_in_dim(cache["k"], k_BTKE, cache["index"], 1)
        v_BSKE = jax.lax.dynamic_update_slice_in_dim(cache["v"], v_BTKE, cache["index"], 1)
        b, t, h, e = q_BTHE.shape
        kv = k_BSKE.shape[2]
        keys_B1S = (jnp.arange(k_BSKE.shape[1])[None, :] - cache["pad"][:, None])[:, None, :]
        allowed_BTS = (keys_B1S >= 0) & visible(
            positions_BT[:, :, None], keys_B1S, self.spec.window_size if self.local else None)
        q_BKGTE = q_BTHE.reshape(b, t, kv, h // kv, e).transpose(0, 2, 3, 1, 4)
        out_BKGTE = masked_attention(q_BKGTE, k_BSKE.transpose(0, 2, 1, 3),
                                     v_BSKE.transpose(0, 2, 1, 3), allowed_BTS[:, None, None],
                                     scale)
        out = out_BKGTE.transpose(0, 3, 1, 2, 4).reshape(b, t, h, e)
        return out, {**cache, "k": k_BSKE, "v": v_BSKE, "index": cache["index"] + t}


    def _rolling(self, q_BTHE, k_BTKE, v_BTKE, positions_BT, scale, cache):
        """A local layer's cache: a ring of S = min(window, length) slots, so its memory
        does not grow with the generation. Slot s holds the newest key whose index (pads
        included) is s mod S; a query reads the ring and the keys written with it."""
        b, t, h, e = q_BTHE.shape
        size, index = cache["k"].shape[1], cache["index"]
        slots_S = index - 1 - jnp.mod(index - 1 - jnp.arange(size), size)  # < 0: empty
        index_S = jnp.concatenate([slots_S, index + jnp.arange(t)])
        keys_BS = index_S[None, :] - cache["pad"][:, None]  # positions
        allowed_BTS = ((index_S >= 0)[None, None, :] & (keys_BS >= 0)[:, None, :]) & visible(
            positions_BT[:, :, None], keys_BS[:, None, :], self.spec.window_size)
        k_BSKE = jnp.concatenate([cache["k"], k_BTKE], axis=1)
        v_BSKE = jnp.concatenate([cache["v"], v_BTKE], axis=1)
        kv = k_BSKE.shape[2]
        q_BKGTE = q_BTHE.reshape(b, t, kv, h // kv, e).transpose(0, 2, 3, 1, 4)
        out_BKGTE = masked_attention(q_BKGTE, k_BSKE.transpose(0, 2, 1, 3),
                                     v_BSKE.transpose(0, 2, 1, 3), allowed_BTS[:, None, None],
                                     scale)
        keep = min(t, size)  # only the newest `size` keys stay in the ring
        write = jnp.mod(index + t - keep + jnp.arange(keep), size)
        ring = {"k": cache["k"].at[:, write].set(k_BTKE[:, t - keep:]),
                "v": cache["v"].at[:, write].set(v_BTKE[:, t - keep:])}
        out = out_BKGTE.transpose(0, 3, 1, 2, 4).reshape(b, t, h, e)
        return out, {**cache, **ring, "index": index + t}
