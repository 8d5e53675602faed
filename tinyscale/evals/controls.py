"""Negative controls for the coherence metrics: corruptions of a true continuation.

Each takes (prompt, continuation, rng) and returns (corrupted continuation, ended).
"""

from __future__ import annotations

import importlib
import inspect
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

def docstring_sentences(n=120):
    """Real English sentences nobody on this project wrote: Python's own docstrings."""
    names = ("argparse collections email http.client json logging subprocess tarfile "
             "threading unittest os pathlib socket asyncio decimal datetime random "
             "statistics functools itertools shutil zipfile sqlite3 inspect typing string "
             "textwrap calendar codecs configparser contextlib csv dataclasses difflib enum "
             "fractions heapq imaplib locale mailbox optparse pickle pdb queue sched selectors "
             "smtplib ssl tempfile tokenize traceback uuid warnings weakref").split()
    found = []
    for module in map(importlib.import_module, names):
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj) or ""
            for s in re.split(r"(?<=\.)\s+", doc.replace("\n", " ")):
                words = s.split()
                if 6 <= len(words) <= 16 and re.fullmatch(r"[A-Za-z ,']+\.", s) and \
                        re.match(r"(The|This|If|When|It|These|Each|Some|All|An?) ", s) and \
                        re.search(r" (is|are|was|will|can|must|should|may|has|have|does) ", s):
                    found.append(s)
    return sorted(set(found))[:n]


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


