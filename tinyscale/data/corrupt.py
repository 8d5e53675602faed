"""Corruptions of SynthStories text: the negative controls for the validator and evals.

Each takes a story's text and a `random.Random` and returns the corrupted text, or
None when the story has nothing of that kind to corrupt.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tinyscale.data import synth_lexicon as lex
from tinyscale.data.synth_text import TERMINAL, detokenize, split_sentences, tokenize
from tinyscale.data.synth_validate import parser

_FLIP = {"he": "she", "she": "he", "him": "her", "his": "her",
         "her:him": "him", "her:his": "his", "her:subj": "he"}


def _sentences(text: str) -> list[list[str]]:
    return split_sentences(tokenize(text))


def _join(sentences: list[list[str]]) -> str:
    return " ".join(detokenize(s) for s in sentences)


def _bindings(sentences: list[list[str]], what: str) -> list[tuple[int, str, int]]:
    """(sentence index, value, token position) of every parsed binding of one kind."""
    found = []
    for i, sentence in enumerate(sentences):
        _, _, binds = parser().parse(sentence)
        found += [(i, value, pos) for kind, value, pos in binds or () if kind == what]
    return found


def shuffle_words(text: str, rng: random.Random) -> str | None:
    """Shuffle the words of one sentence (its final punctuation stays last)."""
    sentences = _sentences(text)
    choices = [i for i, s in enumerate(sentences) if len(s) >= 5 and s[-1] in TERMINAL]
    if not choices:
        return None
    i = rng.choice(choices)
    body = sentences[i][:-1]
    shuffled = body[:]
    while shuffled == body:
        rng.shuffle(shuffled)
    sentences[i] = shuffled + sentences[i][-1:]
    return _join(sentences)


def wrong_pronoun(text: str, rng: random.Random) -> str | None:
    """Give one pronoun outside quotes the other gender."""
    sentences = _sentences(text)
    found = _bindings(sentences, "pron")
    if not found:
        return None
    i, value, pos = rng.choice(found)
    word, _, role = value.partition(":")
    flipped = _FLIP.get(f"{word}:{role}") or _FLIP[word]
    original = sentences[i][pos]
    sentences[i][pos] = flipped.capitalize() if original[0].isupper() else flipped
    return _join(sentences)


def rename_character(text: str, rng: random.Random) -> str | None:
    """From one mention on (not the introduction), call a character by a new name."""
    sentences = _sentences(text)
    refs = [b for b in _bindings(sentences, "ref") if b[1] not in lex.FAMILY]
    if not refs:
        return None
    i, name, pos = rng.choice(refs)
    gender_names = lex.GIRL_NAMES if name in lex.GIRL_NAMES else lex.BOY_NAMES
    new = rng.choice([n for n in gender_names if n not in text.split()])
    for j in range(i, len(sentences)):
        start = pos if j == i else 0
        sentences[j] = sentences[j][:start] + [
            new if t == name else t for t in sentences[j][start:]]
    return _join(sentences)


def swap_object(text: str, rng: random.Random) -> str | None:
    """Replace one mention of an introduced object with one never introduced."""
    sentences = _sentences(text)
    refs = _bindings(sentences, "obj_ref")
    if not refs:
        return None
    i, noun, pos = rng.choice(refs)
    words = set(tokenize(text.lower()))
    sentences[i][pos] = rng.choice([o for o in lex.OBJECTS if o not in words])
    return _join(sentences)


def truncate_sentence(text: str, rng: random.Random) -> str | None:
    """Cut one sentence mid-way and end it there with a full stop."""
    sentences = _sentences(text)
    choices = [i for i, s in enumerate(sentences) if len(s) >= 4]
    if not choices:
        return None
    i = rng.choice(choices)
    cut = rng.randint(1, len(sentences[i]) - 2)
    sentences[i] = sentences[i][:cut] + ["."]
    return _join(sentences)


CORRUPTIONS: dict[str, Callable[[str, random.Random], str | None]] = {
    "shuffled_words": shuffle_words,
    "wrong_pronoun": wrong_pronoun,
    "renamed_character": rename_character,
    "swapped_object": swap_object,
    "truncated_sentence": truncate_sentence,
}
