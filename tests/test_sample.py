import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_model import build
from tinyscale.model.sample import Sampling, generate


def recompute_greedy(model, prompt, n, eos=2, length=32):
    """Greedy decoding the slow way: the whole prefix again at every step."""
    from flax import nnx
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda st, x: nnx.merge(graphdef, st)(x))  # right-padded: causal
    tokens = list(prompt)
    for _ in range(n):
        padded = jnp.asarray([tokens + [0] * (length - len(tokens))])
        nxt = int(jnp.argmax(forward(state, padded)[0, len(tokens) - 1]))
        if nxt == eos:
            break
        tokens.append(nxt)
    return tokens[len(prompt):]


@pytest.mark.parametrize("variant", [
    dict(family="llama", n_kv_heads=2),
    dict(family="gpt_neo", attention_pattern="global,local", window_size=8),
    dict(family="phi", rotary_fraction=0.5, n_kv_heads=2),
    dict(family="llama", attention_pattern="local,global", window_size=4, n_kv_heads=2),
    dict(family="phi", attention_pattern="local", window_size=6),
])
def test_cached_greedy_equals_recomputing_the_prefix(variant):
    c, model = build(**variant)
    from flax import nnx
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 256, n).tolist() for n in (5, 11, 3)]
    got = generate(lambda a: nnx.merge(graphdef, a), state, prompts,
                   Sampling(max_new_tokens=12))
    for prompt, out in zip(prompts, got):
        assert out == recompute_greedy(model, prompt, 12)


def test_sampling_modes_and_beams():
    c, model = build()
    from flax import nnx
    graphdef, state = nnx.split(model)
    fn = lambda a: nnx.merge(graphdef, a)  # noqa: E731
    prompts = [[5, 6, 7], [9]]
    a = generate(fn, state, prompts, Sampling(max_new_tokens=8, temperature=1.0, top_k=5), 1)
    b = generate(fn, state, prompts, Sampling(max_new_tokens=8, temperature=1.0, top_k=5), 1)
    assert a == b  # same seed, same tokens
    top1 = generate(fn, state, prompts, Sampling(max_new_tokens=8, temperature=1.0, top_k=1))
    greedy = generate(fn, state, prompts, Sampling(max_new_tokens=8))
    assert top1 == greedy
    nucleus = generate(fn, state, prompts, Sampling(max_new_tokens=8, temperature=1.0,
                                                   top_p=1e-6))
    assert nucleus == greedy
    beams = generate(fn, state, prompts, Sampling(max_new_tokens=8, beams=4))
    one_beam_score = generate(fn, state, prompts, Sampling(max_new_tokens=8, beams=1))
    assert len(beams) == 2 and all(len(x) <= 8 for x in beams)
    assert one_beam_score == greedy


def test_a_local_layers_cache_is_a_ring_of_the_window():
    """Sliding-window layers keep window_size slots however long the generation; greedy
    and beam search through the ring equal the uncached model."""
    from flax import nnx

    from tinyscale.model.transformer import init_caches
    c, model = build(family="llama", attention_pattern="local,global", window_size=4,
                     n_layers=2)
    caches = init_caches(model.spec, jnp.zeros((3,), jnp.int32), 200)
    assert [x["k"].shape[1] for x in caches] == [4, 200]
    graphdef, state = nnx.split(model)
    fn = lambda a: nnx.merge(graphdef, a)  # noqa: E731
    prompts = [[5, 6, 7], [9]]
    greedy = generate(fn, state, prompts, Sampling(max_new_tokens=20))
    assert greedy == [recompute_greedy(model, p, 20) for p in prompts]
    assert generate(fn, state, prompts, Sampling(max_new_tokens=20, beams=1)) == greedy
