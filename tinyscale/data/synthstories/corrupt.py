"""Corruptions of SynthStories text: the negative controls of the validator and the evals.

Every corruption has one signature, `(text, rng, context="", sites=1) -> str | None`:

* `text` is what gets corrupted: a whole story, or a model's continuation;
* `context` is the text before it (a prompt), read for the grammar's bindings (which
  name a pronoun refers to, which objects were introduced) but never changed;
* `sites` is how many places to corrupt (None: every place it can);
* the result is the corrupted `text`, or None when it has nothing of that kind.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tinyscale.data.synthstories import lexicon as lex
from tinyscale.data.synthstories.text import TERMINAL, detokenize, split_sentences, tokenize
from tinyscale.data.synthstories.validate import parser

# A pronoun's other gender, by its grammatical role: "her" is "him" as an object and
# "his" as a possessive (the validator's bindings say which).
_FLIP = {"he": "she", "she": "he", "him": "her", "his": "her",
         "her:him": "him", "her:his": "his", "her:subj": "he", "her:word": "him"}


class _Text:
    """The context and the text as sentences of tokens; only tokens of `text` change."""

    def __init__(self, text: str, context: str):
        self.context, self.first = context, len(tokenize(context))
        self.sentences = split_sentences(tokenize(context + text))

    def positions(self):
        """(sentence, token, global token index) of every token."""
        k = 0
        for i, sentence in enumerate(self.sentences):
            for j in range(len(sentence)):
                yield i, j, k
                k += 1

    def editable(self, i: int, j: int) -> bool:
        return sum(len(s) for s in self.sentences[:i]) + j >= self.first

    def whole_sentences(self, min_tokens: int = 1, ended: bool = False) -> list[int]:
        """Sentences entirely inside `text` with at least `min_tokens` tokens (and, with
        `ended`, a final . ! or ?)."""
        return [i for i, s in enumerate(self.sentences) if self.editable(i, 0) and
                len(s) >= min_tokens and (not ended or s[-1] in TERMINAL)]

    def bindings(self, what: str) -> list[tuple[int, str, int]]:
        """(sentence, value, token) of every binding of one kind inside `text`."""
        found = []
        for i, sentence in enumerate(self.sentences):
            _, _, binds = parser().parse(sentence)
            found += [(i, value, pos) for kind, value, pos in binds or ()
                      if kind == what and self.editable(i, pos)]
        return found

    def result(self) -> str:
        tokens = [t for s in self.sentences for t in s]
        full, head = detokenize(tokens), detokenize(tokens[:self.first])
        if self.first == 0:
            return full
        return full[len(head):] if full.startswith(head) else " " + detokenize(
            tokens[self.first:])


def _pick(rng: random.Random, choices: list, sites: int | None) -> list:
    return list(choices) if sites is None else rng.sample(choices, min(sites, len(choices)))


def _each_sentence(min_tokens: int, ended: bool = False):
    """A corruption that changes whole sentences of `text` (at least `min_tokens` long),
    made from `change(sentence, rng) -> sentence`."""
    def wrap(change):
        def corruption(text, rng, context="", sites=1):
            t = _Text(text, context)
            choices = t.whole_sentences(min_tokens, ended)
            if not choices:
                return None
            for i in _pick(rng, choices, sites):
                t.sentences[i] = change(t.sentences[i], rng)
            return t.result()
        corruption.__name__, corruption.__doc__ = change.__name__, change.__doc__
        return corruption
    return wrap


@_each_sentence(5, ended=True)
def shuffle_words(sentence, rng):
    """Shuffle the words of a sentence (its final punctuation stays last)."""
    body = sentence[:-1]
    shuffled = body[:]
    while shuffled == body:
        rng.shuffle(shuffled)
    return shuffled + sentence[-1:]


@_each_sentence(3)
def random_words(sentence, rng):
    """Replace the words of a sentence by random words of the lexicon."""
    words = lex.lexicon(1.0)
    pool = [w for cat in ("object", "adj", "place", "act_past", "feel") for w in words[cat]]
    return [rng.choice(pool) for _ in sentence[:-1]] + ["."]


@_each_sentence(4)
def truncate_sentence(sentence, rng):
    """Cut a sentence mid-way and end it there with a full stop."""
    return sentence[:rng.randint(1, len(sentence) - 2)] + ["."]


def wrong_pronoun(text, rng, context="", sites=1):
    """Give a pronoun outside quotes the other gender."""
    t = _Text(text, context)
    found = t.bindings("pron")
    if not found:
        return None
    for i, value, pos in _pick(rng, found, sites):
        word, _, role = value.partition(":")
        flipped = _FLIP.get(f"{word}:{role}") or _FLIP[word]
        original = t.sentences[i][pos]
        t.sentences[i][pos] = flipped.capitalize() if original[0].isupper() else flipped
    return t.result()


def rename_character(text, rng, context="", sites=1):
    """From one mention on (not the introduction), call a character by a new name; with
    sites=None, from its first mention in `text`."""
    t = _Text(text, context)
    refs = [b for b in t.bindings("ref") if b[1] not in lex.FAMILY]
    if not refs:
        return None
    i, name, pos = refs[0] if sites is None else rng.choice(refs)
    gender_names = lex.GIRL_NAMES if name in lex.GIRL_NAMES else lex.BOY_NAMES
    new = rng.choice([n for n in gender_names if n not in (context + text).split()])
    for j in range(i, len(t.sentences)):
        start = pos if j == i else 0
        t.sentences[j] = t.sentences[j][:start] + [
            new if w == name else w for w in t.sentences[j][start:]]
    return t.result()


def swap_object(text, rng, context="", sites=1):
    """Replace a mention of an introduced object with one never introduced."""
    t = _Text(text, context)
    refs = t.bindings("obj_ref")
    if not refs:
        return None
    words = set(tokenize((context + text).lower()))
    fresh = [o for o in lex.OBJECTS if o not in words]
    for i, _, pos in _pick(rng, refs, sites):
        t.sentences[i][pos] = rng.choice(fresh)
    return t.result()


Corruption = Callable[..., "str | None"]
CORRUPTIONS: dict[str, Corruption] = {
    "shuffled_words": shuffle_words,
    "random_words": random_words,
    "wrong_pronoun": wrong_pronoun,
    "renamed_character": rename_character,
    "swapped_object": swap_object,
    "truncated_sentence": truncate_sentence,
}
