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

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

_init = nnx.initializers
ATTENTION_BLOCK = 64  # query block of causal_attention (see its docstring)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The model's shape, resolved from config.model and the vocabulary size."""

    family: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    max_seq_len: int
    window_size: int
    attention_types: tuple[str, ...]  # per layer: global | local
    rope_theta: float
    rotary_dims: int  # dims of each head that RoPE rotates (0: no RoPE, gpt_neo)
    parallel_block: bool
    norm_eps: float
    tie_embeddings: bool
    dtype: str
    param_dtype: str
    n_experts: int = 0          # > 0: Mixtral's sparse MLP of this many experts (MoE)
    experts_per_token: int = 2  # top-k
    router_aux_coef: float = 0.0  # the training loss's weights of the router losses
    router_z_coef: float = 0.0

    @property
    def head_size(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_config(cls, m, vocab_size: int) -> ModelSpec:
        if m.d_ff:
            d_ff = m.d_ff
        elif m.family in ("gpt_neo", "phi"):
            d_ff = 4 * m.d_model
        else:  # llama2.c: 2/3 of 4*d, rounded up to a multiple of 32
            d_ff = 32 * -(-int(8 * m.d_model / 3) // 32)
        from tinyscale.config import attention_types
        types = attention_types(m)
        rotary = 0 if m.family == "gpt_neo" else int(m.d_model // m.n_heads *
                                                      m.rotary_fraction)
        parallel = m.family == "phi" or bool(m.parallel_block)
        return cls(m.family, vocab_size, m.d_model, m.n_layers, m.n_heads,
                   m.n_kv_heads or m.n_heads, d_ff, m.max_seq_len, m.window_size, types,
                   m.rope_theta, rotary, parallel, m.norm_eps,
                   m.tie_embeddings and m.family != "phi", m.dtype, m.param_dtype,
                   m.n_experts, m.experts_per_token, m.router_aux_coef, m.router_z_coef)


def _dense(spec, d_in, d_out, axes, rngs, bias=False, std=0.02):
    return nnx.Linear(
        d_in, d_out, use_bias=bias, dtype=jnp.dtype(spec.dtype),
        param_dtype=jnp.dtype(spec.param_dtype),
        kernel_init=nnx.with_partitioning(_init.normal(std), axes),
        bias_init=nnx.with_partitioning(_init.zeros, axes[1:]), rngs=rngs)


def _norm(spec, rngs):
    axes = ("embed",)
    kwargs = dict(epsilon=spec.norm_eps, dtype=jnp.float32,
                  param_dtype=jnp.dtype(spec.param_dtype), rngs=rngs,
                  scale_init=nnx.with_partitioning(_init.ones, axes))
    if spec.family == "llama":
        return nnx.RMSNorm(spec.d_model, **kwargs)
    return nnx.LayerNorm(spec.d_model, bias_init=nnx.with_partitioning(_init.zeros, axes),
                         **kwargs)


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
    as T grows. Blocks of 64 against 128 (the train step at batch 32 x 256, one process,
    in turns, 6 rounds on the 2-core CPU): d64-L2-h4 29,082 vs 26,562 tokens/s (gpt_neo)
    and 26,229 vs 24,178 (llama), d256-L4-h8 llama 3,296 vs 3,232; 32 was 2% slower
    than 64 at d64. Heads are moved ahead of time first, so every product is a plain
    batched matmul. The values equal `jax.nn.dot_product_attention`'s up to float
    rounding (tests/test_model.py); the speed against it is in the README (Benchmarks).
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


class Attention(nnx.Module):
    def __init__(self, spec: ModelSpec, layer: int, *, rngs: nnx.Rngs):
        self.spec, self.local = spec, spec.attention_types[layer] == "local"
        d, h, k, e = spec.d_model, spec.n_heads, spec.n_kv_heads, spec.head_size
        qkv_bias = spec.family == "phi"
        self.query = _dense(spec, d, h * e, ("embed", "heads"), rngs, bias=qkv_bias)
        self.key = _dense(spec, d, k * e, ("embed", "kv"), rngs, bias=qkv_bias)
        self.value = _dense(spec, d, k * e, ("embed", "kv"), rngs, bias=qkv_bias)
        self.out = _dense(spec, h * e, d, ("heads", "embed"), rngs,
                          bias=spec.family in ("gpt_neo", "phi"),
                          std=0.02 / math.sqrt(2 * spec.n_layers))

    def __call__(self, x_BTD, positions_BT, cache=None):
        s = self.spec
        b, t, _ = x_BTD.shape
        q_BTHE = self.query(x_BTD).reshape(b, t, s.n_heads, s.head_size)
        k_BTKE = self.key(x_BTD).reshape(b, t, s.n_kv_heads, s.head_size)
        v_BTKE = self.value(x_BTD).reshape(b, t, s.n_kv_heads, s.head_size)
        if s.rotary_dims:
            q_BTHE = rope(q_BTHE, positions_BT, s.rope_theta, s.rotary_dims)
            k_BTKE = rope(k_BTKE, positions_BT, s.rope_theta, s.rotary_dims)
        # GPT-Neo does not scale its attention logits by 1/sqrt(E).
        scale = 1.0 if s.family == "gpt_neo" else 1.0 / math.sqrt(s.head_size)
        if cache is not None:
            cached = self._rolling if self.local else self._cached
            out_BTHE, cache = cached(q_BTHE, k_BTKE, v_BTKE, positions_BT, scale, cache)
            return self.out(out_BTHE.reshape(b, t, -1)), cache
        window = s.window_size if self.local else None
        out_BTHE = causal_attention(q_BTHE, k_BTKE, v_BTKE, scale, window)
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


class MLP(nnx.Module):
    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
        self.gated = spec.family == "llama"
        bias, std_out = not self.gated, 0.02 / math.sqrt(2 * spec.n_layers)
        self.up = _dense(spec, spec.d_model, spec.d_ff, ("embed", "mlp"), rngs, bias=bias)
        if self.gated:
            self.gate = _dense(spec, spec.d_model, spec.d_ff, ("embed", "mlp"), rngs)
        self.down = _dense(spec, spec.d_ff, spec.d_model, ("mlp", "embed"), rngs, bias=bias,
                           std=std_out)

    def __call__(self, x_BTD):
        if self.gated:
            return self.down(jax.nn.silu(self.gate(x_BTD)) * self.up(x_BTD))
        return self.down(jax.nn.gelu(self.up(x_BTD), approximate=True))  # GPT-Neo gelu_new


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
        self.router = _dense(spec, d, e, ("embed", None), rngs)

        def param(shape, axes, std=0.02):
            init = nnx.with_partitioning(_init.normal(std), axes)
            return nnx.Param(init(rngs.params(), shape, dtype))
        # the expert axis is sharded (parallel.RULES); embed stays whole inside an expert
        self.gate = param((e, d, f), ("expert", None, "mlp"))
        self.up = param((e, d, f), ("expert", None, "mlp"))
        self.down = param((e, f, d), ("expert", "mlp", None),
                          std=0.02 / math.sqrt(2 * spec.n_layers))

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


class Block(nnx.Module):
    def __init__(self, spec: ModelSpec, layer: int, *, rngs: nnx.Rngs):
        self.parallel = spec.parallel_block
        self.norm_attn = _norm(spec, rngs)
        self.attn = Attention(spec, layer, rngs=rngs)
        if not self.parallel:  # the parallel block reads norm_attn's output twice
            self.norm_mlp = _norm(spec, rngs)
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
        self.spec = spec
        pdtype = jnp.dtype(spec.param_dtype)
        self.embed = nnx.Embed(
            spec.vocab_size, spec.d_model, dtype=jnp.dtype(spec.dtype), param_dtype=pdtype,
            embedding_init=nnx.with_partitioning(_init.normal(0.02), ("vocab", "embed")),
            rngs=rngs)
        if spec.family == "gpt_neo":
            self.positions = nnx.Embed(
                spec.max_seq_len, spec.d_model, dtype=jnp.dtype(spec.dtype),
                param_dtype=pdtype, rngs=rngs,
                embedding_init=nnx.with_partitioning(_init.normal(0.02), (None, "embed")))
        self.blocks = nnx.List([Block(spec, i, rngs=rngs) for i in range(spec.n_layers)])
        self.norm = _norm(spec, rngs)
        if not spec.tie_embeddings:
            self.head = _dense(spec, spec.d_model, spec.vocab_size, ("embed", "vocab"), rngs,
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
        """(W [V, D], bias [V] or None): logits = x W^T + bias. Tied: the embedding."""
        if self.spec.tie_embeddings:
            return self.embed.embedding[...], None
        bias = self.head.bias[...] if self.head.bias is not None else None
        return self.head.kernel[...].T, bias


def init_caches(spec: ModelSpec, pad_B: jax.Array, length: int) -> list[dict]:
    """Empty KV caches of `length` slots for rows left-padded by `pad_B` tokens; a local
    layer's holds min(length, window) slots (a ring: Attention._rolling)."""
    def empty(slots):
        zeros = jnp.zeros((pad_B.shape[0], slots, spec.n_kv_heads, spec.head_size),
                          jnp.dtype(spec.dtype))
        return {"k": zeros, "v": zeros, "pad": pad_B, "index": jnp.int32(0)}
    return [empty(min(length, spec.window_size) if kind == "local" else length)
            for kind in spec.attention_types]
