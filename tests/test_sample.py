import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import RUN_FEW_TIMES, one_program
from tests.test_model import build
from tinyscale import config as config_lib
from tinyscale import parallel
from tinyscale.config import check as config_check
from tinyscale.model.params import Params
from tinyscale.model.sample import Sampling, generate
from tinyscale.model.spec import ModelSpec
from tinyscale.model.transformer import init_caches

# The tests' samplers run once or twice: compiled quickly (train.quick_compile's options,
# as conftest.RUN_FEW_TIMES compiles the tests' own programs)
sampling = functools.partial(Sampling, quick_compile=True)


def recompute_greedy(forward, state, prompt, n, eos=2, length=32):
    """Greedy decoding the slow way: the whole prefix again at every step, through
    `forward` (conftest.one_program: no cache; right padding is harmless, the model is
    causal)."""
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
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 256, n).tolist() for n in (5, 11, 3)]
    got = generate(lambda a: nnx.merge(graphdef, a), state, prompts,
                   sampling(max_new_tokens=12))
    forward = one_program(model)
    for prompt, out in zip(prompts, got):
        assert out == recompute_greedy(*forward, prompt, 12)


def test_sampling_modes_and_beams():
    c, model = build()
    graphdef, state = nnx.split(model)
    fn = lambda a: nnx.merge(graphdef, a)  # noqa: E731
    prompts = [[5, 6, 7], [9]]
    a = generate(fn, state, prompts, sampling(max_new_tokens=8, temperature=1.0, top_k=5), 1)
    b = generate(fn, state, prompts, sampling(max_new_tokens=8, temperature=1.0, top_k=5), 1)
    assert a == b  # same seed, same tokens
    top1 = generate(fn, state, prompts, sampling(max_new_tokens=8, temperature=1.0, top_k=1))
    greedy = generate(fn, state, prompts, sampling(max_new_tokens=8))
    assert top1 == greedy
    nucleus = generate(fn, state, prompts, sampling(max_new_tokens=8, temperature=1.0,
                                                   top_p=1e-6))
    assert nucleus == greedy
    beams = generate(fn, state, prompts, sampling(max_new_tokens=8, beams=4))
    one_beam_score = generate(fn, state, prompts, sampling(max_new_tokens=8, beams=1))
    assert len(beams) == 2 and all(len(x) <= 8 for x in beams)
    assert one_beam_score == greedy


def test_a_local_layers_cache_is_a_ring_of_the_window():
    """Sliding-window layers keep window_size slots however long the generation; greedy
    and beam search through the ring equal the uncached model."""
    c, model = build(family="llama", attention_pattern="local,global", window_size=4,
                     n_layers=2)
    caches = init_caches(model.spec, jnp.zeros((3,), jnp.int32), 200)
    assert [x["k"].shape[1] for x in caches] == [4, 200]
    graphdef, state = nnx.split(model)
    fn = lambda a: nnx.merge(graphdef, a)  # noqa: E731
    prompts = [[5, 6, 7], [9]]
    greedy = generate(fn, state, prompts, sampling(max_new_tokens=20))
    forward = one_program(model)
    assert greedy == [recompute_greedy(*forward, p, 20) for p in prompts]
    assert generate(fn, state, prompts, sampling(max_new_tokens=20, beams=1)) == greedy


def _tiny_vocabulary_model(vocab: int):
    """A random llama over `vocab` tokens (validation wants a real vocabulary size; the
    model itself takes any), its parameters perturbed (std 0.3) so that its next-token
    distributions are peaked and varied: greedy and narrow beams then miss the optimum."""
    c = config_lib.get_config()
    c.model.update(d_model=32, n_layers=2, n_heads=2, d_ff=64)
    config_check.validate(c)
    params = Params(ModelSpec.from_config(c.model, vocab), parallel.make_mesh(c), 3)
    model = params.model(params.initial)
    leaves, tree = jax.tree.flatten(nnx.split(model)[1])
    rng = np.random.default_rng(7)  # numpy's: no random-number program per shape
    nnx.update(model, jax.tree.unflatten(tree, [
        x + jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype) for x in leaves]))
    return model


def _exhaustive_best(model, prompt, vocab, n, eos):
    """The length-normalised best continuation of `prompt` among every sequence of `n`
    tokens (after an EOS only EOS), each scored by full forward passes without a cache:
    sum of log p over its tokens up to and including its EOS, over that many tokens."""
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda st, x: jax.nn.log_softmax(nnx.merge(graphdef, st)(x)),
                      compiler_options=RUN_FEW_TIMES)
    seqs = np.array(list(itertools.product(range(vocab), repeat=n)))
    ended = np.cumsum(seqs == eos, axis=1) > 0
    valid = ~np.any(ended[:, :-1] & (seqs[:, 1:] != eos), axis=1)  # only EOS after EOS
    seqs = seqs[valid]
    logp = np.asarray(forward(state, jnp.asarray(
        np.concatenate([np.tile(prompt, (len(seqs), 1)), seqs], axis=1))))
    steps = np.arange(n)
    token_logp = logp[np.arange(len(seqs))[:, None], len(prompt) - 1 + steps, seqs]
    first_eos = np.where((seqs == eos).any(1), (seqs == eos).argmax(1), n - 1)
    counted = steps[None, :] <= first_eos[:, None]
    score = (token_logp * counted).sum(1) / counted.sum(1)
    best = seqs[int(np.argmax(score))].tolist()
    return best[:best.index(eos)] if eos in best else best


def test_beam_search_equals_exhaustive_search_on_a_tiny_vocabulary():
    """With as many beams as there are sequences, beam search (KV-cached, batched, with
    finished beams carried) must return exactly the exhaustive optimum."""
    vocab, n, eos = 6, 3, 2
    model = _tiny_vocabulary_model(vocab)
    graphdef, state = nnx.split(model)
    prompts = [[1, 4, 5], [3], [5, 5, 0, 1], [0], [4, 4], [1, 3]]
    want = [_exhaustive_best(model, p, vocab, n, eos) for p in prompts]

    def beams(width):
        return generate(lambda a: nnx.merge(graphdef, a), state, prompts,
                        sampling(max_new_tokens=n, beams=width, eos_id=eos))
    assert beams(vocab ** n) == want
    assert beams(1) != want and beams(2) != want  # the case is one a search can miss
