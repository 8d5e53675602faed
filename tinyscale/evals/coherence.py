"""Offline coherence metrics of one completion, each a continuous score in [0, 1].

* grammar         share of the completion's finished sentences the grammar accepts
                  (SynthStories: the corpus grammar; real English: Link Grammar parses
                  the sentence with no null links); 0 when no sentence is finished;
* grammar_prefix  the finer-grained grammar, which moves before the all-or-nothing one
                  does: on SynthStories the mean share of each sentence's tokens inside its
                  longest grammatical prefix; on real English the mean share of words
                  Link Grammar links (1 - null links / words);
* consistency     share of the completion's mentions that are consistent: on SynthStories
                  the validator's exact rules over every name, pronoun and object mention
                  (names introduced, pronouns fit the focus, objects introduced); on real
                  text the heuristic share of capitalised mid-sentence words (names) that
                  the prompt already has;
* completion      1 if the story ends (EOS emitted, last sentence finished), times
                  1 - the share of repeated word 4-grams (degenerate loops score low);
* coherence       grammar x consistency x completion: the headline metric. A product,
                  not a mean, so that a failure of any one kind lowers it by its full
                  size (a wrong pronoun in one mention of seven costs 1/7, not 1/21).

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

from tinyscale.data.synthstories.text import TERMINAL, detokenize, split_sentences, tokenize
from tinyscale.data.synthstories.validate import validate

METRICS = ("grammar", "grammar_prefix", "consistency", "completion", "coherence")
_WORD = re.compile(r"[A-Za-z']+")


def repetition(text: str, n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier one."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def _finished(tokens: list[str]) -> bool:
    return tokens[-1] in TERMINAL or (tokens[-1] == '"' and len(tokens) > 1
                                      and tokens[-2] in TERMINAL)


def _combine(scores: dict, ended: bool, completion_text: str) -> dict:
    scores["completion"] = float(ended) * (1.0 - repetition(completion_text))
    parts = [scores["grammar"], scores["consistency"], scores["completion"]]
    scores["coherence"] = float(np.prod(parts))
    return scores


def _consistency(sentences) -> float:
    checks = sum(max(s.checks, len(s.errors)) for s in sentences)
    if not sentences:
        return 0.0
    return 1.0 - sum(len(s.errors) for s in sentences) / checks if checks else 1.0


def synth_scores(prompt: str, completion: str, ended: bool) -> dict:
    """Scores of a SynthStories completion, read after its prompt."""
    sentences = validate(completion, context=prompt).sentences
    finished = [s for s in sentences if s.complete]
    scores = {
        "grammar": float(np.mean([s.grammatical for s in finished])) if finished else 0.0,
        "grammar_prefix": float(np.mean([s.prefix_share for s in sentences]))
        if sentences else 0.0,
        "consistency": _consistency(sentences),
    }
    ended = ended and bool(sentences) and sentences[-1].complete
    return _combine(scores, ended, completion)


def _names(tokens: list[str]) -> list[str]:
    """Capitalised words that do not start a sentence or a quotation: names."""
    names = []
    for i, tok in enumerate(tokens[1:], 1):
        if tok[:1].isupper() and tok not in ("I", "I'm", "I'll") and tokens[i - 1] not in (
                '"', ".", "!", "?"):
            names.append(tok)
    return names


def english_scores(prompt: str, completion: str, ended: bool, grammar, linked=None) -> dict:
    """Scores of a completion in real English.

    `grammar(sentence) -> bool` and `linked(sentence) -> share of words linked` come from
    Link Grammar (`LinkGrammar.parses`, `LinkGrammar.linked_share`).
    """
    prompt_sentences = split_sentences(tokenize(prompt))
    tail = prompt_sentences[-1] if prompt_sentences and not _finished(
        prompt_sentences[-1]) else []
    sentences = split_sentences(tail + tokenize(completion))
    finished = [s for s in sentences if _finished(s)]
    texts = [detokenize(s) for s in finished]
    known = set(_names(tokenize(prompt))) | set(tokenize(prompt)[:1])
    names = [n for s in sentences for n in _names(s)]
    scores = {
        "grammar": float(np.mean([grammar(t) for t in texts])) if texts else 0.0,
        "grammar_prefix": float(np.mean([linked(t) for t in texts]))
        if texts and linked else (0.0 if linked else float("nan")),
        "consistency": float(np.mean([n in known for n in names])) if names else 1.0,
    }
    ended = ended and bool(sentences) and _finished(sentences[-1])
    return _combine(scores, ended, completion)



def chance_pairs(count: int) -> list[int]:
    """For prompt i, the index of the completion it is read with for the chance
    baseline: the one half the prompt set away (never its own when count > 1)."""
    shift = max(1, count // 2)
    return [(i + shift) % count for i in range(count)]


def above_chance(value: float, chance: float) -> float:
    """(value - chance) / (1 - chance): 0 at chance, 1 at the ceiling (nan when chance
    is already the ceiling)."""
    return (value - chance) / (1.0 - chance) if chance < 1.0 else float("nan")
