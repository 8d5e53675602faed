"""Negative controls for the metrics: corrupted continuations, and real English.

SynthStories controls corrupt a true continuation everywhere they can, with the corpus's
one corruption module (the prompt is read for bindings, never changed); `truncated`
stops (EOS) after the continuation's first third, mid-sentence; `stops early` finishes
the cut sentence and stops there (the small model that "stops after 5-10 words").

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
from tinyscale.data.tinystories import split_stories
from tinyscale.evals.sentences import sentence_spans

ENGLISH = os.path.join(os.path.dirname(__file__), "data", "english_sentences.txt")


def _everywhere(corruption):
    def control(prompt, text, rng):
        return corruption(text, rng, context=prompt, sites=None) or text, True
    return control


def truncated(prompt, text, rng):
    words = text.split()
    return " " + " ".join(words[: max(1, len(words) // 3)]), True


def stops_early(prompt, text, rng):
    end = re.search(r"""[.!?]+"?""", text)
    return (text[:end.end()] if end else text), True


CONTROLS = {**{name: _everywhere(c) for name, c in CORRUPTIONS.items()},
            "truncated": truncated, "stops early": stops_early}


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


# ---- real English: the developer-written stories and their corruptions ----

STORIES = os.path.join(os.path.dirname(__file__), "data", "english_stories")
_OTHER_NAMES = ("Quentin", "Beatrix", "Otto", "Hazel", "Jasper", "Greta", "Felix", "Ivy",
                "Rufus", "Pearl", "Milo", "Opal")
_GENDER = {"he": "she", "she": "he", "him": "her", "his": "her", "himself": "herself",
           "herself": "himself", "hers": "his"}
# "her" before one of these is an object (him), before anything else a possessive (his)
_AFTER_OBJECT = set("and but or to with at in on for from up down back again too . , ! ? \" "
                    "so then when as very a an the".split())


def english_stories(heldout: bool = False, files: tuple[str, ...] = ()) -> list[str]:
    """The developer-written stories in TinyStories' file format, in file order:
    tests/data/english_stories/*.txt (the entity rules were written looking at these;
    `files`: only those), or with `heldout` its heldout/ folder (written apart, read by
    no rule's author)."""
    folder = os.path.join(STORIES, "heldout") if heldout else STORIES
    out = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".txt") and (not files or name in files):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                out.extend(split_stories(f.read()))
    return out


def story_names(story: str) -> set[str]:
    """Capitalised words inside sentences (not after an end mark or an opening quote):
    the story's proper names."""
    return {m.group(1) for m in re.finditer(r"""(?<=[a-z,;] )([A-Z][a-z]+)\b""", story)} - {"I"}


def renamed(story: str, text: str) -> str:
    names = sorted(story_names(story))
    fresh = [n for n in _OTHER_NAMES if n not in story]
    for old, new in zip(names, fresh):
        text = re.sub(rf"\b{old}\b", new, text)
    return text


def gender_swapped(text: str) -> str:
    def swap(match):
        word, after = match.group(1), match.group(2)
        low = word.lower()
        new = ("him" if after.strip().lower() in _AFTER_OBJECT or not after.strip() else "his") \
            if low == "her" else _GENDER[low]
        return (new.capitalize() if word[0].isupper() else new) + after
    pattern = r"\b(he|she|him|his|her|himself|herself|hers)\b(\s*[\w.,!?\"]*)"
    return re.sub(pattern, swap, text, flags=re.IGNORECASE)


def english_controls(story: str, rest: str, other_rest: str, rng: random.Random):
    """name -> (continuation, ended with EOS) for the true continuation `rest` of `story`'s
    prompt: another story's, renamed, pronouns' gender swapped, stopping after the cut
    sentence, words shuffled within each sentence, one sentence looped to the budget,
    cut (at a sentence end) near half its length."""
    spans = sentence_spans(rest)
    first = rest[:spans[0][1]] if spans else rest
    shuffled = rest
    for a, b in reversed(spans[1:]):
        words = rest[a:b].split()
        rng.shuffle(words)
        shuffled = shuffled[:a] + " ".join(words) + shuffled[b:]
    middle = rest[spans[1][0]:spans[1][1]] if len(spans) > 1 else first.strip()
    half_words = len(rest.split()) // 2
    ends = [b for _, b in spans if len(rest[:b].split()) <= half_words] or [spans[0][1]]
    return {
        "another story's": (other_rest, True),
        "characters renamed": (renamed(story, rest), True),
        "pronouns' gender swapped": (gender_swapped(rest), True),
        "stops after the cut sentence": (first, True),
        "words shuffled": (shuffled, True),
        "a sentence looped": (first + (" " + middle) * 12, False),
        "cut at half its length": (rest[:ends[-1]], True),
    }
