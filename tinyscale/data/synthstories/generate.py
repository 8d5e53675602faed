"""SynthStories: the built-in corpus, a seeded generator of TinyStories-like stories.

A story introduces a hero (and maybe a friend, an animal), an object and a place, then
follows a plot arc: setting -> event -> problem -> dialogue -> resolution -> ending.
Story `i` of split `s` under seed `k` depends on nothing but (k, s, i), so a corpus is
reproducible byte for byte and effectively unlimited. `validate.validate` checks
any text against the same grammar and consistency rules.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Iterator

from tinyscale.data.synthstories import grammar
from tinyscale.data.synthstories import lexicon as lex
from tinyscale.data.synthstories.text import capitalize, detokenize, tokenize_pattern

SPLITS = ("train", "eval", "prompt")  # disjoint streams of stories
_SLOT = re.compile(r"\{([A-Z])(?:\.(\w+))?\}")
_PRONOUNS = {"f": {"subj": "she", "him": "her", "his": "her"},
             "m": {"subj": "he", "him": "him", "his": "his"}}


@dataclasses.dataclass(frozen=True)
class Story:
    text: str
    characters: dict[str, str]  # name -> gender ('f' / 'm'), in order of introduction
    objects: tuple[str, ...]    # object nouns, in order of introduction
    problem: str
    sentences: tuple[str, ...] = ()  # the text, sentence by sentence


@functools.cache  # a few hundred patterns, asked about millions of times
def _roles(pattern: str) -> tuple[frozenset[str], frozenset[str]]:
    """(roles the pattern mentions, roles it introduces)."""
    used, intro = set(), set()
    for role, attr in _SLOT.findall(pattern):
        used.add(role)
        if attr in ("new", "a"):
            intro.add(role)
    return frozenset(used), frozenset(intro)


class _Writer:
    """Renders patterns for one story, tracking introductions and the focus."""

    def __init__(self, rng: random.Random, richness: float):
        self.rng, self.words = rng, lex.lexicon(richness)
        self.introduced, self.focus, self.sentences = {"F", "P"}, None, []
        self.cast: dict[str, tuple[str, str]] = {}  # role -> (name, gender)
        self.things: dict[str, str] = {}            # role -> noun

    def usable(self, pattern: str, planned: set[str]) -> bool:
        used, intro = _roles(pattern)
        return all((r in intro and r in planned and r not in self.introduced)
                   or (r not in intro and r in self.introduced) for r in used)

    def say(self, options: list[str], planned: set[str], count: int = 1) -> None:
        fits = [p for p in options if self.usable(p, planned)]
        for pattern in self.rng.sample(fits, min(count, len(fits))):
            if self.usable(pattern, planned):  # an earlier pick may have introduced a role
                self.sentences.append(detokenize(capitalize(self.render(pattern))))

    def render(self, pattern: str, quoted: bool = False) -> list[str]:
        out, self._named = [], False
        for sym in tokenize_pattern(pattern):
            if sym.startswith("<"):
                out += self.render(self.rng.choice(grammar.SUB_PATTERNS[sym[1:-1]]), True)
            elif sym.startswith("{@"):
                out.append(self.rng.choice(self.words[sym[2:-1]]))
            elif sym.startswith("{"):
                role, _, attr = sym[1:-1].partition(".")
                out += self.slot(role, attr, quoted)
            else:
                out.append(sym)
        return out

    def slot(self, role: str, attr: str, quoted: bool) -> list[str]:
        rng = self.rng
        if role == "P":
            return [self.things["P"]]
        if role in ("O", "Q"):
            if attr != "a":
                return [self.things[role]]
            self.introduced.add(role)
            return self.article(self.things[role])
        name, gender = self.cast[role]
        if attr == "a_kind":
            kinds = [k for k, g in lex.KINDS.items() if g == gender]
            return self.article(rng.choice(kinds[:2] if rng.random() < 0.7 else kinds))
        if attr == "new":
            self.introduced.add(role)
        if attr in ("", "him", "his") and not quoted and self.focus == role \
                and rng.random() < 0.6:
            return [_PRONOUNS[gender][attr or "subj"]]
        if not quoted and not self._named:
            self.focus, self._named = role, True
        return [name, "'s"] if attr == "his" else [name]

    def article(self, noun: str) -> list[str]:
        words = [noun]
        if self.rng.random() < 0.5:
            words.insert(0, self.rng.choice(self.words["adj"]))
        return ["an" if words[0][0] in "aeiou" else "a"] + words


def story(index: int, seed: int = 0, split: str = "train", richness: float = 1.0) -> Story:
    """Story number `index` of `split` under `seed`: a pure function of its arguments."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return compose(random.Random(f"synthstories/{seed}/{split}/{index}"), richness)


def compose(rng: random.Random, richness: float, features: frozenset | None = None) -> Story:
    """A story drawn with `rng`. `features` (SynthStories-Instruct, instruct.py) shape its
    plot: Dialogue, BadEnding, MoralValue, Twist, Foreshadowing, Conflict; without them
    (None) it draws exactly what it always drew, so the base corpus never changes."""
    w = _Writer(rng, richness)
    words = w.words
    has = (lambda f: False) if features is None else features.__contains__
    if features is None:
        problem = rng.choice(sorted(grammar.PROBLEMS))
    else:  # a conflict is a quarrel between the two children: the sharing problem
        problem = "share" if has("Conflict") else rng.choice(
            sorted(set(grammar.PROBLEMS) - {"share"}))
    planned = {"A", "O"}
    if problem == "share" or rng.random() < 0.6:
        planned.add("B")
    if problem == "scared" or rng.random() < 0.5:
        planned.add("Q")
    hero_gender = rng.choice("fm")
    hero = rng.choice(words["girl" if hero_gender == "f" else "boy"])
    w.cast["A"] = (hero, hero_gender)
    friend_gender = rng.choice("fm")
    friend = rng.choice([n for n in words["girl" if friend_gender == "f" else "boy"]
                         if n != hero])
    w.cast["B"] = (friend, friend_gender)
    family = rng.choice(sorted(lex.FAMILY))
    w.cast["F"] = (family, lex.FAMILY[family])
    w.things["O"] = rng.choice(words["toy"])
    w.things["Q"] = rng.choice(words["animal"])
    w.things["P"] = rng.choice(words["place"])

    w.say(grammar.SETTING, planned)
    w.say(grammar.SETTING_MORE, planned - {"B"}, rng.randint(1, 2))
    if "B" in planned:
        w.say([p for p in grammar.SETTING_MORE if "{B.new}" in p], planned)
    if has("Foreshadowing"):
        w.say(grammar.FORESHADOWING, set())
    w.say([p for p in grammar.EVENT if "{O.a}" in p], planned)
    if "Q" in planned:
        w.say([p for p in grammar.EVENT if "{Q.a}" in p], planned)
    w.say(grammar.EVENT, planned - {"O", "Q"}, rng.randint(2, 4))
    problems, fixes = grammar.PROBLEMS[problem]
    w.say(problems, set(), rng.randint(1, 2))
    if has("Twist"):
        w.say(grammar.TWIST[:1], set())
        w.say(grammar.TWIST[1:], set())
    w.say(grammar.FEELING, set(), rng.randint(0, 1))
    dialogue = rng.randint(2, 3)
    if features is None or has("Dialogue"):
        w.say(grammar.DIALOGUE, set(), dialogue)
    if has("BadEnding"):
        w.say(grammar.BAD_ENDINGS[problem], set(), rng.randint(1, 2))
    else:
        w.say(fixes, set(), rng.randint(1, 2))
        w.say(grammar.FEELING, set(), rng.randint(0, 1))
        endings = grammar.ENDING if features is None else [
            e for e in grammar.ENDING if e not in grammar.MORAL]
        w.say(endings, set(), rng.randint(1, 2))
    if has("MoralValue"):
        w.say(grammar.MORAL, set())
    characters = {w.cast[r][0]: w.cast[r][1] for r in "AB" if r in w.introduced}
    objects = tuple(w.things[r] for r in "OQ" if r in w.introduced)
    return Story(" ".join(w.sentences), characters, objects, problem, tuple(w.sentences))


def stories(count: int, seed: int = 0, split: str = "train", richness: float = 1.0,
            start: int = 0) -> Iterator[Story]:
    for index in range(start, start + count):
        yield story(index, seed, split, richness)
