"""Sentences and words of real English, found on the raw string.

Real text is never re-joined from tokens: a sentence is a span of the text itself, so
paragraph breaks, quotes, contractions and any odd character stay as they were.
"""

from __future__ import annotations

import re

# A sentence ends at . ! or ? (a run of them), with any closing quotes or brackets after
# it, followed by the end of the text or by whitespace and a word that does not go on
# the same sentence in lower case ('"Where is it?" she asked.' is one sentence).
SENTENCE_END = re.compile(r"""[.!?]+["')\]]*(?=\s*$|\s+(?![a-z]))""")
WORD_START = re.compile(r"(?<!\S)[A-Za-z]")  # a word after a space or at the start


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of raw text, found on its own characters: a sentence
    runs from its first non-space character to its end mark (closing quotes included)."""
    spans, start = [], 0
    for match in SENTENCE_END.finditer(text):
        begin = len(text) - len(text[start:].lstrip()) if start < len(text) else start
        if begin < match.end():
            spans.append((begin, match.end()))
        start = match.end()
    rest = text[start:]
    if rest.strip():
        spans.append((start + len(rest) - len(rest.lstrip()), len(text.rstrip())))
    return spans


def is_finished(sentence: str) -> bool:
    """Whether a sentence ends with its end mark (closing quotes allowed)."""
    return re.search(r"""[.!?]+["')\]]*\s*$""", sentence) is not None
