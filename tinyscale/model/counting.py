"""Parameter counts (total / embedding / non-embedding) and training FLOPs per token.

Embedding parameters are the token embeddings, GPT-Neo's learned positions and an
untied output projection (with Phi's bias); everything else is non-embedding (Kaplan et
al., 2020).

A mixture of experts (model.n_experts) counts every expert in `total` and only the
top-k in `active` (the parameters one token's forward pass uses; `active` = `total`
for a dense model), and its FLOPs count the active experts and the router.

Training FLOPs per token follow PaLM (Chowdhery et al., 2022, appendix B):
6 x (parameters used in matmuls, output projection included) + 12 x layers x d_attn x T,
where T is the attended context (the window for local layers), counted in full.
"""

from __future__ import annotations

from tinyscale.model.spec import ModelSpec


def _block_parameters(s: ModelSpec, active: bool = False) -> tuple[int, int]:
    """(matmul weights, other parameters) of one transformer block; `active`: of a
    mixture's experts only the top-k."""
    d, e = s.d_model, s.head_size
    attention = d * s.n_heads * e + 2 * d * s.n_kv_heads * e + s.n_heads * e * d
    layer_norm = s.family in ("gpt_neo", "phi")  # scale and bias; RMSNorm: scale only
    norms = (1 if s.parallel_block else 2) * (2 * d if layer_norm else d)
    if s.family == "llama":
        if s.n_experts:
            experts = s.experts_per_token if active else s.n_experts
            return attention + d * s.n_experts + experts * 3 * d * s.d_ff, norms
        return attention + 3 * d * s.d_ff, norms
    mlp = 2 * d * s.d_ff
    other = norms + d + s.d_ff + d  # out_proj bias, MLP biases
    if s.family == "phi":
        other += (s.n_heads + 2 * s.n_kv_heads) * e  # q, k, v biases
    return attention + mlp, other


def parameter_counts(s: ModelSpec) -> dict[str, int]:
    matmul, other = _block_parameters(s)
    final_norm = s.d_model if s.family == "llama" else 2 * s.d_model
    embedding = s.vocab_size * s.d_model
    if s.family == "gpt_neo":
        embedding += s.max_seq_len * s.d_model
    if not s.tie_embeddings:
        embedding += s.d_model * s.vocab_size + (s.vocab_size if s.family == "phi" else 0)
    non_embedding = s.n_layers * (matmul + other) + final_norm
    active = embedding + non_embedding - s.n_layers * (matmul - _block_parameters(s, True)[0])
    return {"total": embedding + non_embedding, "embedding": embedding,
            "non_embedding": non_embedding, "active": active}


def flops_per_token(s: ModelSpec, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token at sequence length `seq_len`."""
    matmul, _ = _block_parameters(s, active=True)
    matmul_params = s.n_layers * matmul + s.d_model * s.vocab_size
    attended = sum(min(seq_len, s.window_size) if t == "local" else seq_len
                   for t in s.attention_types)
    return 6.0 * matmul_params + 12.0 * s.n_heads * s.head_size * attended


def of_config(c, vocab_size: int | None = None) -> dict:
    """Parameters three ways and training FLOPs per token of a run's config.

    `vocab_size` is the prepared tokenizer's (default: config.data.vocab_size).
    """
    spec = ModelSpec.from_config(c.model, vocab_size or c.data.vocab_size)
    return {**parameter_counts(spec), "flops_per_token": flops_per_token(spec, c.train.seq_len)}
