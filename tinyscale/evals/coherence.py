"""Offline coherence metrics of one completion, each a continuous score in [0, 1].

* grammar         share of the completion's finished sentences the grammar accepts
                  (SynthStories: the corpus grammar; real English: Link Grammar parses
                  the sentence with no null links); 0 when no sentence is finished;
* grammar_prefix  the finer-grained grammar, which moves before the all-or-nothing one
                  does: on SynthStories the mean share of each sentence's tokens inside its
                  longest grammatical prefix; on real English the mean share of words
                  Link Grammar links (1 - null links / words);
* consistency     share of the completion's mentions that are consistent with the story:
                  on SynthStories the validator's exact rules over every name, pronoun and
                  object mention; on real English the entity tracker's rules
                  (`evals/entities.py`: names introduced, pronouns that fit a character,
                  "the X" only for what was introduced), times the reference LM's context
                  use when it runs (`context_factor`, see evals/scoring.py);
* completion      the story ends well, at a length fit for its story, without loops:
                  (1 - the share of repeated word 4-grams) x, when the model emitted EOS,
                  [its last sentence is finished] x min(1, words / (LENGTH_TARGET x the
                  reference continuation's words)). A completion cut by the token budget
                  is scored by what it wrote (no length or ending factor) and marked
                  `truncated`; stopping after the cut sentence scores low, not 1;
* coherence       grammar x consistency x completion: the headline metric. A product,
                  not a mean, so that a failure of any one kind lowers it by its full
                  size (a wrong pronoun in one mention of seven costs 1/7, not 1/21).

Diagnostics per completion (means in eval.json): `words`, `ended` (EOS after a finished
sentence), `truncated` (cut by eval.max_new_tokens), `looping` (repeated 4-gram share of
at least LOOP), `length_ratio` (words / the reference continuation's words).

Chance: every metric is also measured on each prompt read with the model's completion of
*another* prompt (`chance_pairs`): what the same completions score when they ignore the
context. `consistency` is high by chance (a completion that mentions no one, or only
pronouns, breaks no rule): a model that tracks who and what its story is about is one
whose consistency is above its chance, so emergence of consistency is read on
`consistency_above_chance` = (consistency - chance) / (1 - chance): 0 for a model that
ignores its prompt, 1 for one whose every mention fits it.
"""

from __future__ import annotations

import re

import numpy as np

from tinyscale.data.synthstories.validate import validate
from tinyscale.evals import entities, sentences

METRICS = ("grammar", "grammar_prefix", "consistency", "completion", "coherence")
DIAGNOSTICS = ("words", "ended", "truncated", "looping", "length_ratio")
LENGTH_TARGET = 0.75  # share of the reference's words an ended story needs for full marks
LOOP = 0.25           # repeated 4-gram share from which a completion counts as looping
_WORD = re.compile(r"[A-Za-z']+")


def repetition(text: str, n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier one."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def completion_scores(text: str, ended: bool, finished: bool,
                      reference: str | None = None) -> dict:
    """`completion` and its diagnostics. `ended`: the model emitted EOS (False: the token
    budget cut it); `finished`: its last sentence is finished; `reference`: the true
    continuation, whose length sets the target (None: no length target)."""
    count = len(_WORD.findall(text))
    ref = len(_WORD.findall(reference)) if reference else 0
    rep = repetition(text)
    if ended:
        length = min(1.0, count / (LENGTH_TARGET * ref)) if ref else float(count > 0)
        score = float(finished) * length * (1.0 - rep)
    else:  # cut by the budget: it could not have written more
        score = 1.0 - rep if count else 0.0
    return {"completion": score, "words": float(count), "ended": float(ended and finished),
            "truncated": float(not ended), "looping": float(rep >= LOOP),
            "length_ratio": count / ref if ref else float("nan")}


def _combine(scores: dict) -> dict:
    scores["coherence"] = float(scores["grammar"] * scores["consistency"]
                                * scores["completion"])
    return scores


def _consistency(sentences) -> float:
    checks = sum(max(s.checks, len(s.errors)) for s in sentences)
    if not sentences:
        return 0.0
    return 1.0 - sum(len(s.errors) for s in sentences) / checks if checks else 1.0


def synth_scores(prompt: str, completion: str, ended: bool,
                 reference: str | None = None) -> dict:
    """Scores of a SynthStories completion, read after its prompt."""
    found = validate(completion, context=prompt).sentences
    finished = [s for s in found if s.complete]
    scores = {
        "grammar": float(np.mean([s.grammatical for s in finished])) if finished else 0.0,
        "grammar_prefix": float(np.mean([s.prefix_share for s in found]))
        if found else 0.0,
        "consistency": _consistency(found),
        **completion_scores(completion, ended, bool(found) and found[-1].complete,
                            reference),
    }
    return _combine(scores)


def completion_sentences(prompt: str, completion: str) -> list[str]:
    """The sentences the completion wrote, on the raw text: the prompt's unfinished last
    sentence joined with the completion's start, then the completion's own."""
    text = prompt + completion
    return [" ".join(text[a:b].split()) for a, b in sentences.sentence_spans(text)
            if b > len(prompt)]


def english_scores(prompt: str, completion: str, ended: bool, grammar, linked=None,
                   reference: str | None = None) -> dict:
    """Scores of a completion in real English.

    `grammar(sentence) -> bool` and `linked(sentence) -> share of words linked` come from
    Link Grammar (`LinkGrammar.parses`, `LinkGrammar.linked_share`).
    """
    found = completion_sentences(prompt, completion) if completion.strip() else []
    finished = [s for s in found if sentences.is_finished(s)]
    tracked = entities.track(prompt, completion)
    scores = {
        "grammar": float(np.mean([grammar(t) for t in finished])) if finished else 0.0,
        "grammar_prefix": float(np.mean([linked(t) for t in finished]))
        if finished and linked else (0.0 if linked else float("nan")),
        "consistency": tracked.score,
        "consistency_entity": tracked.score,
        **completion_scores(completion, ended, bool(found) and sentences.is_finished(
            found[-1]), reference),
    }
    return _combine(scores)


# Nats per token of context use at which the factor below is 1/(1 + e^-1) = 0.73: the
# true continuations of the developer-written stories reach a median of about four times
# this (docs/results.md), so they score near 1, and a completion that ignores its
# prompt scores 0.5.
CONTEXT_SCALE = 0.25


def context_factor(context_use: float) -> float:
    """The reference LM's context use (nats per token the completion gains from its own
    prompt over another's) as a factor in (0, 1): a logistic curve, 0.5 for a completion
    that ignores its prompt, towards 1 the more of its story it carries over, below 0.5
    for one that fits another story better. Never flat, so that every detail carried
    over (a name, a gender, an object) still counts for a completion that already
    carries much."""
    return float(1.0 / (1.0 + np.exp(-context_use / CONTEXT_SCALE)))


def with_context(row: dict, context_use: float) -> dict:
    """`row`'s consistency and coherence with the reference LM's context use folded in."""
    row["context_use"] = float(context_use)
    row["consistency"] = row["consistency_entity"] * context_factor(context_use)
    return _combine(row)


def chance_pairs(count: int) -> list[int]:
    """For prompt i, the index of the completion it is read with for the chance
    baseline: the one half the prompt set away (never its own when count > 1)."""
    shift = max(1, count // 2)
    return [(i + shift) % count for i in range(count)]


def above_chance(value: float, chance: float) -> float:
    """(value - chance) / (1 - chance) for a share: 0 at chance, 1 at the ceiling (nan
    when chance is already the ceiling)."""
    return (value - chance) / (1.0 - chance) if chance < 1.0 else float("nan")
