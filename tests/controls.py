"""Negative controls for the metrics: corrupted continuations, and real English.

SynthStories controls corrupt a true continuation everywhere they can, with the corpus's
one corruption module (the prompt is read for bindings, never changed); `truncated`
cuts the continuation to its first third, unfinished.

Real English: tests/data/english_sentences.txt holds 240 plain sentences nobody on this
project wrote: half from Python's standard-library docstrings, half from the long
descriptions of Debian packages (6-16 words, letters and commas only, so no quoted code
names). It was made once by `english_sentences_from_host()` and is shipped, so the
tests read the same sentences on every machine.
"""

from __future__ import annotations

import importlib
import inspect
import os
import random
import re

import numpy as np

from tinyscale.data.synthstories.corrupt import CORRUPTIONS

ENGLISH = os.path.join(os.path.dirname(__file__), "data", "english_sentences.txt")


def _everywhere(corruption):
    def control(prompt, text, rng):
        return corruption(text, rng, context=prompt, sites=None) or text, True
    return control


def truncated(prompt, text, rng):
    words = text.split()
    return " " + " ".join(words[: max(1, len(words) // 3)]), False


CONTROLS = {**{name: _everywhere(c) for name, c in CORRUPTIONS.items()},
            "truncated": truncated}


def english_sentences() -> list[str]:
    with open(ENGLISH) as f:
        return [line.strip() for line in f if line.strip()]


def shuffle(sentence: str, rng: random.Random) -> str:
    words = sentence[:-1].split()
    while True:
        rng.shuffle(words)
        if " ".join(words) != sentence[:-1]:
            return " ".join(words).capitalize() + "."


def auc(positive, negative) -> float:
    """P(a positive scores above a negative), ties counted half."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    wins = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(wins + 0.5 * ties)


# ---- how english_sentences.txt was made (reads this host's files; not run by tests) ----

_STDLIB = ("argparse collections email http.client json logging subprocess tarfile threading "
           "unittest os pathlib socket asyncio decimal datetime random statistics functools "
           "itertools shutil zipfile sqlite3 inspect typing string textwrap calendar codecs "
           "configparser contextlib csv dataclasses difflib enum fractions heapq imaplib "
           "locale mailbox optparse pickle pdb queue sched selectors smtplib ssl tempfile "
           "tokenize traceback uuid warnings weakref").split()
_START = re.compile(r"(The|This|If|When|It|These|Each|Some|All|An?|In|Most) ")
_VERB = re.compile(r" (is|are|was|will|can|must|should|may|has|have|does|provides|contains) ")


def _keep(sentence: str) -> bool:
    return 6 <= len(sentence.split()) <= 16 and re.fullmatch(r"[A-Za-z ,]+\.", sentence) \
        is not None and _START.match(sentence) is not None and _VERB.search(sentence) is not None


def _split(text: str) -> list[str]:
    return re.split(r"(?<=\.)\s+", " ".join(text.split()))


def english_sentences_from_host(n: int = 240, seed: int = 0,
                                status: str = "/var/lib/dpkg/status") -> list[str]:
    docs = set()
    for module in map(importlib.import_module, _STDLIB):
        for _, obj in inspect.getmembers(module):
            docs.update(filter(_keep, _split(inspect.getdoc(obj) or "")))
    debian = set()
    with open(status, encoding="utf-8", errors="replace") as f:
        for block in f.read().split("\n\n"):
            match = re.search(r"^Description: [^\n]*\n((?: [^\n]*(?:\n|$))*)", block, re.M)
            if match:
                body = " ".join(line.strip() for line in match.group(1).splitlines()
                                if line.strip() != ".")
                debian.update(filter(_keep, _split(body)))
    rng = random.Random(seed)
    take = min(len(debian), n // 2)
    chosen = rng.sample(sorted(debian), take) + rng.sample(sorted(docs), n - take)
    return sorted(chosen)
