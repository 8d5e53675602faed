import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import RUN_FEW_TIMES, one_program
from tinyscale import config as config_lib
from tinyscale import parallel
from tinyscale.config import check as config_check
from tinyscale.model import counting
from tinyscale.model.attention import causal_attention, fused_attention
from tinyscale.model.moe import dense_experts, router_stats
from tinyscale.model.params import Params
from tinyscale.model.spec import ModelSpec


def config(family="llama", vocab=256, **model):
    """The default config with these model knobs, validated."""
    c = config_lib.get_config()
    c.model.family = family
    for k, v in model.items():
        c.model[k] = v
    c.data.vocab_size = vocab
    config_check.validate(c)
    return c


def build(family="llama", vocab=256, **model):
    """(config, the model at seed 0), initialised as a run's: one compiled program."""
    c = config(family, vocab, **model)
    params = Params(ModelSpec.from_config(c.model, vocab), parallel.make_mesh(c), 0)
    return c, params.model(params.initial)


VARIANTS = [
    dict(family="llama"),
    dict(family="llama", n_kv_heads=2, tie_embeddings=False),
    dict(family="gpt_neo"),
    dict(family="gpt_neo", attention_pattern="local", window_size=4, d_ff=96),
    dict(family="phi", rotary_fraction=0.5),
    dict(family="llama", parallel_block=True, rotary_fraction=0.25),
    dict(family="llama", attention_pattern="local,local,global", window_size=5, n_layers=3),
    dict(family="llama", n_experts=4, experts_per_token=2, n_kv_heads=2),
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_position_sees_the_future(variant):
    forward, state = one_program(build(**variant)[1])  # one program, as in training
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 24)))
    logits = forward(state, tokens)
    for t in (0, 7, 23):
        changed = forward(state, tokens.at[:, t].set((tokens[:, t] + 1) % 256))
        assert float(jnp.abs(changed[:, :t] - logits[:, :t]).max(initial=0.0)) == 0.0
        assert float(jnp.abs(changed[:, t:] - logits[:, t:]).max()) > 0.0


def test_local_attention_forgets_beyond_its_window():
    forward, state = one_program(build("gpt_neo", attention_pattern="local", window_size=4,
                                       n_layers=1)[1])
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 256, (1, 16)))
    changed = forward(state, tokens.at[:, 2].set((tokens[:, 2] + 1) % 256))
    diff = jnp.abs(changed - forward(state, tokens)).max(axis=-1)[0]
    assert float(diff[5]) > 0 and float(diff[6:].max()) == 0.0  # positions 2..5 see token 2


@pytest.mark.parametrize("window", [None, 5, 16])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_blocked_attention_equals_full_attention(window, kv_heads):
    """Query blocks of 8 over 27 positions (a short last block; windows inside a block
    and spanning blocks) give jax.nn.dot_product_attention's values and gradients, called
    as the cudnn path calls it (its XLA implementation: the window and GQA conventions
    of the GPU path, tested on any device; the kernels themselves: test_attention.py)."""
    rng = np.random.default_rng(0)  # numpy's: no random-number program to compile
    q = jnp.asarray(rng.standard_normal((2, 27, 4, 8)), jnp.float32)
    k, v = (jnp.asarray(rng.standard_normal((2, 27, kv_heads, 8)), jnp.float32)
            for _ in range(2))
    w = jnp.asarray(rng.standard_normal(q.shape), jnp.float32)

    def reference(q, k, v):
        return jnp.sum(w * fused_attention(q, k, v, 0.3, window, implementation="xla"))

    def blocked(q, k, v):
        return jnp.sum(w * causal_attention(q, k, v, 0.3, window, block=8))

    want, got = (jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)),
                         compiler_options=RUN_FEW_TIMES)(q, k, v) for f in (reference, blocked))
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_allclose(b, a, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_counts_equal_actual_parameter_sizes(variant):
    c, model = build(**variant)
    actual = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    counts = counting.parameter_counts(ModelSpec.from_config(c.model, 256))
    assert counts["total"] == actual
    assert counts["embedding"] + counts["non_embedding"] == actual


def test_dropless_experts_equal_a_dense_loop_over_experts():
    """The sorted, grouped (ragged_dot) MoE layer against every expert applied to every
    token and weighted by the router: values and gradients; the load sows shares."""
    _, model = build(n_experts=4, experts_per_token=2, n_layers=2)
    moe = model.blocks[0].mlp
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 24, 64)), jnp.float32)
    graphdef, state = nnx.split(moe)

    def values(fn):
        return jax.jit(lambda st: fn(nnx.merge(graphdef, st), x),
                       compiler_options=RUN_FEW_TIMES)(state)
    np.testing.assert_allclose(values(lambda m, x: m(x, record=False)),
                               values(dense_experts), atol=1e-6)

    def grads(fn):
        return jax.jit(jax.grad(lambda st: fn(nnx.merge(graphdef, st), x).sum()),
                       compiler_options=RUN_FEW_TIMES)(state)
    g1, g2 = grads(lambda m, x: m(x, record=False)), grads(dense_experts)
    for (path, a), (_, b) in zip(nnx.to_flat_state(g1), nnx.to_flat_state(g2), strict=True):
        np.testing.assert_allclose(a.get_value(), b.get_value(), atol=1e-5, err_msg=str(path))
    nnx.jit(lambda m, tokens: m(tokens))(model, jnp.zeros((2, 16), jnp.int32))  # sows
    stats = router_stats(model)
    assert stats["load"].shape == (2, 4)
    np.testing.assert_allclose(stats["load"].sum(-1), 1.0, rtol=1e-6)
    assert float(stats["balance"]) >= 1.0 - 1e-5  # E x sum f P: 1 when perfectly even
