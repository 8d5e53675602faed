"""The model's shape (`ModelSpec`): every dimension and choice the layers are built from,
resolved from config.model and the vocabulary size."""

from __future__ import annotations

import dataclasses

from tinyscale.config import attention_types


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
        types = attention_types(m)
        rotary = 0 if m.family == "gpt_neo" else int(m.d_model // m.n_heads *
                                                      m.rotary_fraction)
        parallel = m.family == "phi" or bool(m.parallel_block)
        return cls(m.family, vocab_size, m.d_model, m.n_layers, m.n_heads,
                   m.n_kv_heads or m.n_heads, d_ff, m.max_seq_len, m.window_size, types,
                   m.rope_theta, rotary, parallel, m.norm_eps,
                   m.tie_embeddings and m.family != "phi", m.dtype, m.param_dtype,
                   m.n_experts, m.experts_per_token, m.router_aux_coef, m.router_z_coef)
