"""Negative controls for the coherence metrics: corruptions of a true continuation.

Each takes (prompt, continuation, rng) and returns (corrupted continuation, ended).
"""

from __future__ import annotations

import importlib
import inspect
import random
import re

import numpy as np

from tinyscale.data import synth_lexicon as lex
from tinyscale.data.synth_text import detokenize, split_sentences, tokenize


def _sentences(text):
    return split_sentences(tokenize(text))


def _join(sentences):
    return " " + " ".join(detokenize(s) for s in sentences)


def shuffled_words(prompt, text, rng):
    out = []
    for s in _sentences(text):
        body = s[:-1]
        rng.shuffle(body)
        out.append(body + s[-1:])
    return _join(out), True


def random_words(prompt, text, rng):
    words = lex.lexicon(1.0)
    pool = [w for cat in ("object", "adj", "place", "act_past", "feel") for w in words[cat]]
    return " " + " ".join(rng.choice(pool) for _ in text.split()) + ".", True


def wrong_names(prompt, text, rng):
    names = set(lex.GIRL_NAMES) | set(lex.BOY_NAMES)
    fresh = [n for n in sorted(names) if n not in prompt and n not in text]
    mapping = {}
    out = [[mapping.setdefault(t, rng.choice(fresh)) if t in names else t for t in s]
           for s in _sentences(text)]
    return _join(out), True


def wrong_pronouns(prompt, text, rng):
    flip = {"he": "she", "she": "he", "him": "her", "his": "her", "her": "his"}
    out = [[(flip[t.lower()].capitalize() if t[0].isupper() else flip[t.lower()])
            if t.lower() in flip else t for t in s] for s in _sentences(text)]
    return _join(out), True


def truncated(prompt, text, rng):
    words = text.split()
    return " " + " ".join(words[: max(1, len(words) // 3)]), False


CONTROLS = {"shuffled_words": shuffled_words, "random_words": random_words,
            "wrong_names": wrong_names, "wrong_pronouns": wrong_pronouns,
            "truncated": truncated}


# Real English that nobody on this project wrote, and its word-shuffled control.

_STDLIB = ("argparse collections email http.client json logging subprocess tarfile threading "
           "unittest os pathlib socket asyncio decimal datetime random statistics functools "
           "itertools shutil zipfile sqlite3 inspect typing string textwrap calendar codecs "
           "configparser contextlib csv dataclasses difflib enum fractions heapq imaplib "
           "locale mailbox optparse pickle pdb queue sched selectors smtplib ssl tempfile "
           "tokenize traceback uuid warnings weakref").split()
_START = re.compile(r"(The|This|If|When|It|These|Each|Some|All|An?|In|Most) ")
_VERB = re.compile(r" (is|are|was|will|can|must|should|may|has|have|does|provides|contains) ")


def _keep(sentence: str) -> bool:
    """A plain declarative sentence of 6-16 words: letters, spaces and commas only, so
    no quoted code identifiers ('limit'), paths, versions or markup."""
    return 6 <= len(sentence.split()) <= 16 and re.fullmatch(r"[A-Za-z ,]+\.", sentence) \
        is not None and _START.match(sentence) is not None and _VERB.search(sentence) is not None


def _split(text: str) -> list[str]:
    return re.split(r"(?<=\.)\s+", " ".join(text.split()))


def docstring_sentences() -> list[str]:
    """Sentences of Python's own docstrings (standard library)."""
    found = set()
    for module in map(importlib.import_module, _STDLIB):
        for _, obj in inspect.getmembers(module):
            found.update(filter(_keep, _split(inspect.getdoc(obj) or "")))
    return sorted(found)


def debian_sentences(status: str = "/var/lib/dpkg/status") -> list[str]:
    """Sentences of the long descriptions of the Debian packages installed here."""
    try:
        text = open(status, encoding="utf-8", errors="replace").read()
    except OSError:
        return []
    found = set()
    for block in text.split("\n\n"):
        match = re.search(r"^Description: [^\n]*\n((?: [^\n]*(?:\n|$))*)", block, re.M)
        if match:
            body = " ".join(line.strip() for line in match.group(1).splitlines()
                            if line.strip() != ".")
            found.update(filter(_keep, _split(body)))
    return sorted(found)


def english_sentences(n: int = 240, seed: int = 0) -> list[str]:
    """Real English that nobody on this project wrote: up to `n` sentences, half from
    Python's docstrings and half from Debian package descriptions where the machine has
    them (a seeded sample, so the set is the same on machines with the same packages)."""
    rng = random.Random(seed)
    debian, docs = debian_sentences(), docstring_sentences()
    take = min(len(debian), n // 2)
    chosen = rng.sample(debian, take) + rng.sample(docs, min(len(docs), n - take))
    return sorted(chosen)


def shuffle(sentence, rng):
    words = sentence[:-1].split()
    while True:
        rng.shuffle(words)
        if " ".join(words) != sentence[:-1]:
            return " ".join(words).capitalize() + "."


def auc(positive, negative):
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    wins = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return wins + 0.5 * ties


