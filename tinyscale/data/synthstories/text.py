"""Tokens and sentences of SynthStories text, shared by the generator and the validator."""

from __future__ import annotations

import functools
import re

# Words (with their contractions), the possessive 's, punctuation; anything else is
# a token of its own, so that no character of a model's output is silently dropped.
_TOKEN = re.compile(r"[A-Za-z]+(?:n't|'m|'ll|'re|'ve)?|'s|[.,!?\"]|\S")
_PATTERN_TOKEN = re.compile(r"\{[^}]+\}|<\w+>|[A-Za-z]+(?:n't|'m|'ll|'re|'ve)?|'s|[.,!?\"]")
TERMINAL = frozenset(".!?")
PRONOUN_GENDER = {"he": "m", "him": "m", "his": "m", "she": "f", "her": "f"}


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


@functools.cache  # the grammar's patterns, rendered again and again
def tokenize_pattern(pattern: str) -> tuple[str, ...]:
    return tuple(_PATTERN_TOKEN.findall(pattern))


def split_sentences(tokens: list[str]) -> list[list[str]]:
    """Sentences end at . ! ? outside quotes, or at a closing quote right after one.

    The last sentence may be unfinished (no terminal punctuation): callers can tell
    by its last token.
    """
    sentences, current, in_quote = [], [], False
    for token in tokens:
        current.append(token)
        if token == '"':
            in_quote = not in_quote
            if not in_quote and len(current) > 1 and current[-2] in TERMINAL:
                sentences.append(current)
                current = []
        elif token in TERMINAL and not in_quote:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def quote_mask(tokens: list[str]) -> list[bool]:
    """True for tokens inside quotation marks (the marks themselves included)."""
    mask, in_quote = [], False
    for token in tokens:
        if token == '"':
            in_quote = not in_quote
            mask.append(True)
        else:
            mask.append(in_quote)
    return mask


def detokenize(tokens: list[str]) -> str:
    """Join tokens with the spacing of ordinary English text."""
    out, in_quote, glue_next = [], False, True
    for token in tokens:
        if token == '"':
            in_quote = not in_quote
            if in_quote:
                out.append(("" if glue_next else " ") + token)
                glue_next = True
            else:
                out.append(token)
            continue
        if token in {",", ".", "!", "?", "'s"} or glue_next:
            out.append(token)
        else:
            out.append(" " + token)
        glue_next = False
    return "".join(out)


def capitalize(tokens: list[str]) -> list[str]:
    """Capitalise the first word of the sentence and of each quotation."""
    out, start, quotes = [], True, 0
    for token in tokens:
        if token == '"':
            quotes += 1
            start = start or quotes % 2 == 1
        elif start and token[:1].isalpha():
            token = token[0].upper() + token[1:]
            start = False
        out.append(token)
    return out
