"""Batched generation with a KV cache: greedy, temperature, top-k, top-p and beams.

Prompts are left-padded to a fixed length and generation runs a fixed number of
steps under `lax.scan`, so each (batch, prompt length, new tokens) compiles once.
Rows that emit EOS keep emitting EOS.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tinyscale import parallel
from tinyscale.model.transformer import init_caches


@dataclasses.dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0     # 0 = greedy (or beam search with beams > 1)
    top_k: int = 0               # keep the k most likely tokens; 0 = all
    top_p: float = 1.0           # keep the smallest set with this much probability
    beams: int = 1               # beam search width (temperature is ignored)
    eos_id: int = 2
    quick_compile: bool = False  # on CPU, compiled as parallel.QUICK_COMPILE (a run's
                                 # train.quick_compile)


def _filter(logits_BV, s: Sampling):
    logits_BV = logits_BV / s.temperature
    if s.top_k:
        kth = jax.lax.top_k(logits_BV, s.top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth, -jnp.inf, logits_BV)
    if s.top_p < 1.0:
        sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
        cum_BV = jnp.cumsum(jax.nn.softmax(sorted_BV, axis=-1), axis=-1)
        # the smallest logit still inside the nucleus (the first one always is)
        inside = jnp.concatenate([jnp.ones_like(cum_BV[:, :1], bool),
                                  cum_BV[:, :-1] < s.top_p], axis=-1)
        cutoff = jnp.min(jnp.where(inside, sorted_BV, jnp.inf), axis=-1, keepdims=True)
        logits_BV = jnp.where(logits_BV < cutoff, -jnp.inf, logits_BV)
    return logits_BV


def _prefill(model, tokens_BP, pad_B, total):
    caches = init_caches(model.spec, pad_B, total)
    positions_BP = jnp.arange(tokens_BP.shape[1])[None, :] - pad_B[:, None]
    logits_BPV, caches = model(tokens_BP, positions_BP, caches)
    return logits_BPV[:, -1], caches, positions_BP[:, -1]


def _sample(arrays, tokens_BP, pad_B, key, build, s: Sampling):
    model = build(arrays)
    logits_BV, caches, last_B = _prefill(model, tokens_BP, pad_B,
                                         tokens_BP.shape[1] + s.max_new_tokens)

    def step(carry, key):
        logits_BV, caches, last_B, done_B = carry
        if s.temperature == 0:
            token_B = jnp.argmax(logits_BV, axis=-1)
        else:
            token_B = jax.random.categorical(key, _filter(logits_BV, s))
        token_B = jnp.where(done_B, s.eos_id, token_B).astype(jnp.int32)
        logits_B1V, caches = model(token_B[:, None], (last_B + 1)[:, None], caches)
        return (logits_B1V[:, 0], caches, last_B + 1, done_B | (token_B == s.eos_id)), token_B

    init = (logits_BV, caches, last_B, jnp.zeros(pad_B.shape, bool))
    _, tokens_NB = jax.lax.scan(step, init, jax.random.split(key, s.max_new_tokens))
    return tokens_NB.T


def _beam_search(arrays, tokens_BP, pad_B, build, s: Sampling):
    model, w = build(arrays), s.beams
    b = tokens_BP.shape[0]
    logits_BV, caches, last_B = _prefill(model, tokens_BP, pad_B,
                                         tokens_BP.shape[1] + s.max_new_tokens)
    widen = functools.partial(jnp.repeat, repeats=w, axis=0)  # row b -> rows b*w .. b*w+w-1
    caches = [{**c, "k": widen(c["k"]), "v": widen(c["v"]), "pad": widen(c["pad"])}
              for c in caches]
    scores_BW = jnp.tile(jnp.array([0.0] + [-jnp.inf] * (w - 1)), (b, 1))
    init = (widen(jax.nn.log_softmax(logits_BV)), caches, widen(last_B), scores_BW,
            jnp.zeros((b, w), bool), jnp.zeros((b, w, s.max_new_tokens), jnp.int32),
            jnp.zeros((b, w), jnp.int32))

    def step(carry, i):
        logp_RV, caches, last_R, scores_BW, done_BW, seqs, lengths_BW = carry
        v = logp_RV.shape[-1]
        logp_BWV = logp_RV.reshape(b, w, v)
        finished = jnp.full((v,), -jnp.inf).at[s.eos_id].set(0.0)  # a done beam only pads
        logp_BWV = jnp.where(done_BW[..., None], finished, logp_BWV)
        scores_BC, choice_BW = jax.lax.top_k((scores_BW[..., None] + logp_BWV).reshape(b, -1), w)
        beam_BW, token_BW = choice_BW // v, choice_BW % v
        rows_R = (jnp.arange(b)[:, None] * w + beam_BW).reshape(-1)
        caches = [{**c, "k": c["k"][rows_R], "v": c["v"][rows_R]} for c in caches]
        pick = functools.partial(jnp.take_along_axis, indices=beam_BW, axis=1)
        seqs = jnp.take_along_axis(seqs, beam_BW[..., None], axis=1).at[:, :, i].set(token_BW)
        was_done = pick(done_BW)
        lengths_BW = pick(lengths_BW) + (~was_done)
        done_BW = was_done | (token_BW == s.eos_id)
        logits_R1V, caches = model(token_BW.reshape(-1, 1), (last_R + 1)[:, None], caches)
        carry = (jax.nn.log_softmax(logits_R1V[:, 0]), caches, last_R + 1, scores_BC,
                 done_BW, seqs, lengths_BW)
        return carry, None

    (_, _, _, scores_BW, _, seqs, lengths_BW), _ = jax.lax.scan(
        step, init, jnp.arange(s.max_new_tokens))
    best_B = jnp.argmax(scores_BW / jnp.maximum(lengths_BW, 1), axis=1)  # length-normalised
    return jnp.take_along_axis(seqs, best_B[:, None, None], axis=1)[:, 0]


@functools.cache
def _program(fn, quick: bool):
    """`fn` jitted, with QUICK_COMPILE's options if `quick` (on CPU)."""
    return jax.jit(fn, static_argnames=("build", "s"),
                   compiler_options=parallel.compile_options(quick))


def pad_prompts(prompts: list[list[int]], length: int | None = None, multiple: int = 32):
    """Left-pad token lists to one length (a multiple of `multiple`): (tokens, pad)."""
    longest = max(len(p) for p in prompts)
    length = length or -(-longest // multiple) * multiple
    tokens = np.zeros((len(prompts), length), np.int32)
    pad = np.array([length - len(p) for p in prompts], np.int32)
    for row, p in enumerate(prompts):
        tokens[row, length - len(p):] = p
    return tokens, pad


def generate(build, arrays, prompts: list[list[int]], s: Sampling, seed: int = 0,
             prompt_length: int | None = None):
    """Token lists generated after each prompt, cut at EOS (excluded).

    `build(arrays)` returns the model (e.g. `steps.Params.model`); prompts are padded to
    `prompt_length` (default: the longest, rounded up to a multiple of 32).
    """
    tokens, pad = pad_prompts(prompts, prompt_length)
    if s.beams > 1:
        out = _program(_beam_search, s.quick_compile)(arrays, tokens, pad, build, s)
    else:
        out = _program(_sample, s.quick_compile)(arrays, tokens, pad, jax.random.key(seed),
                                                 build, s)
    result = []
    for row in np.asarray(out).tolist():
        result.append(row[:row.index(s.eos_id)] if s.eos_id in row else row)
    return result
