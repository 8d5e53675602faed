"""SynthStories-Instruct: each story preceded by its instructions, in TinyStories-Instruct's
layout, and the exact check of whether a text follows them.

    Features: Dialogue, Twist
    Words: jump, ball, shiny
    Summary: Lily loses her ball, and she finds it again.
    Random sentence: Lily smiled at the dog.
    Story: Once upon a time, ...

The instructions come from the story's own ground truth: the features are what the
generator was told to write (generate.compose), the words a verb, a noun and an
adjective of the story, the summary its hero, object, problem and whether the problem is
solved, the sentence one of its sentences. Each kind of line is there with a fixed
probability (at least one is), so a model learns to follow any combination, as in
TinyStories-Instruct. `check` says which instructions a story satisfies -- exactly, since
the generator's patterns say what each feature looks like.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re

from tinyscale.data.synthstories import generate, grammar
from tinyscale.data.synthstories import lexicon as lex
from tinyscale.data.synthstories.text import split_sentences, tokenize
from tinyscale.data.synthstories.validate import Parser

FEATURES = ("Dialogue", "BadEnding", "MoralValue", "Twist", "Foreshadowing", "Conflict")
FEATURE_SHARE = {"Dialogue": 0.5, "BadEnding": 0.25, "MoralValue": 0.3, "Twist": 0.25,
                 "Foreshadowing": 0.25, "Conflict": 0.2}
LINE_SHARE = {"features": 0.8, "words": 0.7, "summary": 0.6, "sentence": 0.5}
_PROBLEM = {"lost": "loses {his} {O}", "broken": "breaks {his} {O}",
            "stuck": "gets {his} {O} stuck", "share": "will not share the {O} with {B}",
            "scared": "and the {Q} get scared"}
_SOLVED = {True: "and it ends well", False: "and it ends badly"}
_PAST = {base: past for base, past in lex.ACTIVITIES + lex.HANDLINGS}


@dataclasses.dataclass(frozen=True)
class Instructions:
    features: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    summary: str = ""
    sentence: str = ""
    # what `summary` says, for its check: (hero, object, problem kind, solved)
    plot: tuple | None = None

    def header(self) -> str:
        lines = []
        if self.features:
            lines.append(f"Features: {', '.join(self.features)}")
        if self.words:
            lines.append(f"Words: {', '.join(self.words)}")
        if self.summary:
            lines.append(f"Summary: {self.summary}")
        if self.sentence:
            lines.append(f"Random sentence: {self.sentence}")
        return "\n".join(lines + ["Story: "])


@dataclasses.dataclass(frozen=True)
class InstructStory:
    story: generate.Story
    instructions: Instructions

    @property
    def text(self) -> str:
        return self.instructions.header() + self.story.text


def story(index: int, seed: int = 0, split: str = "train", richness: float = 1.0
          ) -> InstructStory:
    """Instructed story `index` of `split` under `seed` (a stream of its own)."""
    rng = random.Random(f"synthstories-instruct/{seed}/{split}/{index}")
    features = frozenset(f for f in FEATURES if rng.random() < FEATURE_SHARE[f])
    s = generate.compose(rng, richness, features)
    lines = {k for k, p in LINE_SHARE.items() if rng.random() < p} or {"words"}
    present = tuple(f for f in FEATURES if f in features and has_feature(s.text, f))
    return InstructStory(s, Instructions(
        features=present if "features" in lines else (),
        words=_words(s.text, rng) if "words" in lines else (),
        summary=_summary(s, features) if "summary" in lines else "",
        sentence=rng.choice(s.sentences) if "sentence" in lines else "",
        plot=_plot(s, features) if "summary" in lines else None))


def stories(count: int, seed: int = 0, split: str = "train", richness: float = 1.0):
    for index in range(count):
        yield story(index, seed, split, richness)


def _words(text: str, rng: random.Random) -> tuple[str, ...]:
    """A verb (its base form), a noun and an adjective of the story, in random order."""
    low = [t.lower() for t in tokenize(text)]
    past = {p: b for b, p in _PAST.items()}
    verbs = sorted({past[t] for t in low if t in past} | {t for t in low if t in _PAST})
    nouns = sorted({t for t in low if t in lex.OBJECTS or t in lex.PLACES})
    adjectives = sorted({t for t in low if t in lex.ADJECTIVES})
    words = [rng.choice(group) for group in (verbs, nouns, adjectives) if group]
    rng.shuffle(words)
    return tuple(words)


def _plot(s: generate.Story, features: frozenset) -> tuple:
    """(hero, the words that name someone or something of the story -- the hero's
    pronoun too --, problem kind, solved)."""
    hero = next(iter(s.characters))
    pronoun = "she" if s.characters[hero] == "f" else "he"
    return (hero, (*s.characters, *s.objects, pronoun), s.problem,
            "BadEnding" not in features)


def _summary(s: generate.Story, features: frozenset) -> str:
    hero, problem, solved = next(iter(s.characters)), s.problem, "BadEnding" not in features
    thing = s.objects[0] if s.objects else ""
    names = list(s.characters)
    what = _PROBLEM[problem].format(
        his="her" if s.characters[hero] == "f" else "his", O=thing,
        B=names[1] if len(names) > 1 else "a friend",
        Q=s.objects[1] if len(s.objects) > 1 else "animal")
    return f"{hero} {what}, {_SOLVED[solved]}."


@functools.cache
def _parser(patterns: tuple[str, ...]):
    return Parser(patterns)


def _sentences(text: str) -> list[list[str]]:
    return split_sentences(tokenize(text))


def _matches(text: str, patterns) -> list[list[str]]:
    """The sentences of `text` that one of `patterns` accepts."""
    p = _parser(tuple(patterns))
    return [s for s in _sentences(text) if p.parse(s)[0]]


_FEATURE_PATTERNS = {
    "BadEnding": [p for ps in grammar.BAD_ENDINGS.values() for p in ps],
    "MoralValue": grammar.MORAL,
    "Twist": grammar.TWIST,
    "Foreshadowing": grammar.FORESHADOWING,
    "Conflict": grammar.PROBLEMS["share"][0],
}


def has_feature(text: str, feature: str) -> bool:
    """Whether a story shows `feature`: dialogue is a quotation; the others are a sentence
    of the feature's patterns (a conflict: a quarrel over sharing)."""
    if feature == "Dialogue":
        return '"' in text
    return bool(_matches(text, _FEATURE_PATTERNS[feature]))


def _has_word(low_tokens: set, word: str) -> bool:
    return word in low_tokens or _PAST.get(word) in low_tokens


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def check(instructions: Instructions, text: str) -> dict[str, bool]:
    """{instruction: satisfied by the story `text`} for every instruction given."""
    low = {t.lower() for t in tokenize(text)}
    out = {f"feature {f}": has_feature(text, f) for f in instructions.features}
    out.update({f"word {w}": _has_word(low, w) for w in instructions.words})
    if instructions.sentence:
        out["sentence"] = _normal(instructions.sentence) in _normal(text)
    if instructions.plot:  # its hero, its problem, and that problem's end, told of them
        hero, entities, problem, solved = instructions.plot
        ending = grammar.PROBLEMS[problem][1] if solved else grammar.BAD_ENDINGS[problem]
        told = [s for s in _matches(text, ending)
                if {t.lower() for t in s} & {e.lower() for e in entities}]
        out["summary"] = hero in tokenize(text) and bool(
            _matches(text, grammar.PROBLEMS[problem][0])) and bool(told)
    return out


def score(instructions: Instructions, before: str, continuation: str,
          english: bool = False) -> float:
    """The share of the instructions still open after the story's beginning `before`
    that the story `before + continuation` satisfies (NaN when none is open); `english`:
    with `check_english`."""
    checker = check_english if english else check
    already = checker(instructions, before)
    done = checker(instructions, before + continuation)
    open_ = [k for k, v in already.items() if not v]
    return sum(done[k] for k in open_) / len(open_) if open_ else float("nan")


# Common irregular English verbs (base: other forms), for the Words check on real text.
_IRREGULAR = {base: tuple(forms.split("/")) for base, forms in (p.split(":") for p in """
be:was/were/been/is/are/am begin:began/begun bite:bit/bitten blow:blew/blown break:broke/broken
bring:brought build:built buy:bought catch:caught choose:chose/chosen come:came do:did/done/does
draw:drew/drawn dream:dreamt/dreamed drink:drank/drunk drive:drove/driven eat:ate/eaten
fall:fell/fallen feed:fed feel:felt fight:fought find:found fly:flew/flown/flies forget:forgot
freeze:froze/frozen get:got/gotten give:gave/given go:went/gone/goes grow:grew/grown
hang:hung have:had/has hear:heard hide:hid/hidden hold:held hurt:hurt keep:kept know:knew/known
lead:led leave:left lend:lent let:let lie:lay/lain light:lit lose:lost make:made mean:meant
meet:met pay:paid put:put read:read ride:rode/ridden ring:rang/rung rise:rose/risen run:ran
say:said see:saw/seen sell:sold send:sent shake:shook/shaken shine:shone shoot:shot
show:showed/shown shut:shut sing:sang/sung sink:sank/sunk sit:sat sleep:slept slide:slid
speak:spoke/spoken spend:spent spin:spun stand:stood steal:stole/stolen stick:stuck
sting:stung swim:swam/swum swing:swung take:took/taken teach:taught tear:tore/torn
tell:told think:thought throw:threw/thrown understand:understood wake:woke/woken
wear:wore/worn win:won write:wrote/written""".split())}


_LINES = {"Features": "features", "Words": "words", "Summary": "summary",
          "Random sentence": "sentence"}


def parse(entry: str) -> tuple[Instructions, str, str]:
    """(instructions, header, story) of an entry in TinyStories-Instruct's layout: the
    instruction lines, then "Story:" and the story. The summary's plot is not known."""
    at = entry.find("Story:")
    if at < 0:
        return Instructions(), "", entry
    start = at + len("Story:")
    start += len(entry[start:]) - len(entry[start:].lstrip())
    fields = {}
    for line in entry[:at].splitlines():
        key, _, value = line.partition(":")
        if key.strip() in _LINES:
            fields[_LINES[key.strip()]] = value.strip()
    def items(key: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in fields.get(key, "").split(",") if x.strip())
    return (Instructions(items("features"), items("words"), fields.get("summary", ""),
                         fields.get("sentence", "")), entry[:start], entry[start:])


def check_english(instructions: Instructions, text: str) -> dict[str, bool]:
    """`check` for real English (TinyStories-Instruct), as far as text can tell: the
    words (with -s, -es, -ed, -d, -ing), the sentence, and the Dialogue feature (a
    quotation); the other features and the summary are not checked."""
    low = {t.lower() for t in re.findall(r"[A-Za-z']+", text)}

    def used(word: str) -> bool:
        w = word.lower()
        stem = w[:-1] if w.endswith(("e", "y")) else w
        forms = {w, w + "s", w + "es", w + "ed", w + "d", stem + "ing", w + "ing",
                 w + w[-1:] + "ed", w + w[-1:] + "ing", stem + "ied", stem + "ies",
                 _PAST.get(w), *_IRREGULAR.get(w, ())}
        return bool(forms & low)
    out = {"feature Dialogue": '"' in text} if "Dialogue" in instructions.features else {}
    out.update({f"word {w}": used(w) for w in instructions.words})
    if instructions.sentence:
        out["sentence"] = _normal(instructions.sentence) in _normal(text)
    return out
