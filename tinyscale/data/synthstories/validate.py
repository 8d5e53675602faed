"""Validate any text against the SynthStories grammar and its consistency rules.

Grammar: a sentence is accepted when it is exactly one of the patterns of
`grammar.py` with its slots filled from the lexicon; the parser also reports the
longest prefix of the sentence that some pattern can still complete.

Consistency (the rules the generator follows, checked sentence by sentence):
  * a child's name must be introduced ("... named Lily") before it is used;
  * a gendered noun agrees with the name it introduces ("a boy named Lily" fails);
  * outside quotes, he/she/him/his/her refer to the *focus*: the first character named
    in the current sentence, or else the focus of the sentences before;
  * "the ball" needs a ball introduced earlier ("a red ball").
Sentences that do not parse are still checked, with bindings read off the words.
"""

from __future__ import annotations

import dataclasses
import functools

from tinyscale.data.synthstories import grammar
from tinyscale.data.synthstories import lexicon as lex
from tinyscale.data.synthstories.text import (
    PRONOUN_GENDER,
    TERMINAL,
    quote_mask,
    split_sentences,
    tokenize,
    tokenize_pattern,
)

_VOWELS = frozenset("aeiou")


@dataclasses.dataclass
class SentenceReport:
    tokens: list[str]
    grammatical: bool       # the whole sentence is one of the grammar's sentences
    prefix: int             # tokens in the longest prefix the grammar can complete
    complete: bool          # ends with terminal punctuation
    errors: list[str]       # consistency errors, in order
    checks: int = 0         # mentions checked for consistency (names, pronouns, objects)

    @property
    def prefix_share(self) -> float:
        return self.prefix / max(1, len(self.tokens))


@dataclasses.dataclass
class TextReport:
    sentences: list[SentenceReport]

    @property
    def grammatical(self) -> bool:
        return all(s.grammatical for s in self.sentences)

    @property
    def consistent(self) -> bool:
        return not any(s.errors for s in self.sentences)

    @property
    def valid(self) -> bool:
        return self.grammatical and self.consistent


class Parser:
    """Backtracking matcher of token lists against the compiled patterns."""

    def __init__(self, patterns: tuple[str, ...] | None = None):
        """A parser of `patterns` (default: every sentence pattern of the grammar)."""
        words = lex.lexicon(1.0)
        self.cats = {name: frozenset(w.lower() for w in ws) for name, ws in words.items()}
        self.names = {n: "f" for n in lex.GIRL_NAMES} | {n: "m" for n in lex.BOY_NAMES}
        self.family = dict(lex.FAMILY)
        self.kinds = dict(lex.KINDS)
        self.objects = frozenset(lex.OBJECTS)
        self.places = frozenset(lex.PLACES)
        self.patterns = [_compile(p) for p in patterns or grammar.SENTENCE_PATTERNS]
        self.subs = {k: [_compile(p) for p in ps] for k, ps in grammar.SUB_PATTERNS.items()}

    def parse(self, tokens: list[str]) -> tuple[bool, int, list | None]:
        """(accepted, longest completable prefix, bindings of the first full parse)."""
        self._toks, self._low, self._far = tokens, [t.lower() for t in tokens], 0
        for pattern in self.patterns:
            for end, binds in self._seq(pattern, 0, 0, ()):
                if end == len(tokens):
                    return True, end, list(binds)
        return False, self._far, None

    def _seq(self, seq, k, pos, binds):
        if k == len(seq):
            yield pos, binds
            return
        for end, new in self._sym(seq[k], pos):
            self._far = max(self._far, end)
            yield from self._seq(seq, k + 1, end, binds + new)

    def _sym(self, sym, pos):  # noqa: C901 - one branch per slot kind, kept together
        if pos >= len(self._toks):
            return
        kind, arg = sym
        tok, low = self._toks[pos], self._low[pos]
        if kind == "lit":
            if low == arg:
                yield pos + 1, ()
        elif kind == "cat":
            if low in self.cats[arg]:
                yield pos + 1, ()
        elif kind == "place":
            if low in self.places:
                yield pos + 1, ()
        elif kind == "noun":
            if low in self.objects:
                yield pos + 1, (("obj_ref", low, pos),)
        elif kind == "sub":
            for seq in self.subs[arg]:
                yield from self._seq(seq, 0, pos, ())
        elif kind in ("a", "a_kind"):
            yield from self._article_phrase(kind, pos)
        else:
            yield from self._character(kind, tok, low, pos)

    def _character(self, kind, tok, low, pos):
        named = tok in self.names or (tok in self.family and kind != "new")
        if kind == "new":
            if tok in self.names:
                yield pos + 1, (("intro", tok, pos),)
        elif kind == "his":
            if named and self._low[pos + 1: pos + 2] == ["'s"]:
                yield pos + 2, (("ref", tok, pos),)
            elif low in ("his", "her"):
                yield pos + 1, (("pron", f"{low}:his", pos),)
        elif named:
            yield pos + 1, (("ref", tok, pos),)
        elif low in {"subj": ("he", "she"), "him": ("him", "her")}.get(kind, ()):
            yield pos + 1, (("pron", f"{low}:{kind}", pos),)

    def _article_phrase(self, kind, pos):
        low = self._low
        if low[pos] not in ("a", "an"):
            return
        nouns = self.kinds if kind == "a_kind" else self.objects
        for skip in (0, 1):
            head, noun_at = pos + 1, pos + 1 + skip
            if noun_at >= len(low) or (skip and low[head] not in self.cats["adj"]):
                continue
            if (low[head][:1] in _VOWELS) != (low[pos] == "an"):
                continue
            if low[noun_at] in nouns:
                bind = ("kind", self.kinds[low[noun_at]], pos) if kind == "a_kind" else (
                    "obj_intro", low[noun_at], pos)
                yield noun_at + 1, (bind,)


def _compile(pattern: str) -> list[tuple[str, str]]:
    """Pattern text -> symbols: ('lit', word) | ('cat', c) | ('sub', s) | slot kinds."""
    symbols = []
    for tok in tokenize_pattern(pattern):
        if tok.startswith("<"):
            symbols.append(("sub", tok[1:-1]))
        elif tok.startswith("{@"):
            symbols.append(("cat", tok[2:-1]))
        elif tok.startswith("{"):
            role, _, attr = tok[1:-1].partition(".")
            if role == "P":
                symbols.append(("place", role))
            elif role in ("O", "Q"):
                symbols.append(("a" if attr == "a" else "noun", role))
            else:
                symbols.append((attr or "subj", role))
        else:
            symbols.append(("lit", tok.lower()))
    return symbols


@functools.lru_cache(maxsize=1)
def parser() -> Parser:
    return Parser()


def _word_bindings(p: Parser, tokens: list[str]) -> list[tuple]:
    """Bindings read off the words of a sentence the grammar does not accept."""
    binds, low = [], [t.lower() for t in tokens]
    for i, tok in enumerate(tokens):
        prev = low[i - 1] if i else ""
        if tok in p.names and prev in ("named", "called"):
            binds.append(("intro", tok, i))
        elif tok in p.names or tok in p.family:
            binds.append(("ref", tok, i))
        elif low[i] in PRONOUN_GENDER:
            binds.append(("pron", f"{low[i]}:word", i))
        elif low[i] in p.objects and prev == "the":
            binds.append(("obj_ref", low[i], i))
        elif low[i] in p.objects and (prev in ("a", "an") or (
                prev in p.cats["adj"] and i > 1 and low[i - 2] in ("a", "an"))):
            binds.append(("obj_intro", low[i], i))
    return binds


class _Entities:
    """What a reader knows so far: introduced names and objects, and the focus."""

    def __init__(self, p: Parser):
        self.p, self.names, self.objects, self.focus = p, dict(p.family), set(), None

    def check(self, binds: list[tuple], in_quote: list[bool]) -> tuple[list[str], int]:
        """(errors, number of mentions checked) for one sentence's bindings."""
        errors, first_named, kind_gender, checks = [], None, None, 0
        for what, value, pos in binds:
            quoted = in_quote[pos]
            checks += what in ("ref", "obj_ref") or (what == "pron" and not quoted)
            if what == "intro":
                self.names[value] = self.p.names[value]
                if kind_gender and kind_gender != self.names[value]:
                    errors.append(f"{value} is introduced with a noun of the other gender")
            elif what == "kind":
                kind_gender = value
            elif what == "ref" and value not in self.names:
                errors.append(f"{value} was never introduced")
            elif what == "pron" and not quoted:
                gender = PRONOUN_GENDER[value.partition(":")[0]]
                if self.focus is None:
                    errors.append(f"'{value.partition(':')[0]}' refers to nobody")
                elif self.names.get(self.focus, gender) != gender:
                    errors.append(f"'{value.partition(':')[0]}' does not fit {self.focus}")
            elif what == "obj_intro":
                self.objects.add(value)
            elif what == "obj_ref" and value not in self.objects:
                errors.append(f"the {value} was never introduced")
            if what in ("intro", "ref") and not quoted and first_named is None:
                first_named = self.focus = value
        return errors, checks


def validate(text: str, context: str = "") -> TextReport:
    """Report on every sentence of `text`, read after `context` (e.g. a prompt).

    A sentence that starts in the context and ends in the text (a prompt cut
    mid-sentence) is reported whole.
    """
    p = parser()
    context_tokens, text_tokens = tokenize(context), tokenize(text)
    entities, reports, seen = _Entities(p), [], 0
    for sentence in split_sentences(context_tokens + text_tokens):
        seen += len(sentence)
        ok, prefix, binds = p.parse(sentence)
        if binds is None:
            binds = _word_bindings(p, sentence)
        errors, checks = entities.check(binds, quote_mask(sentence))
        if seen > len(context_tokens):
            reports.append(SentenceReport(
                sentence, ok, prefix, sentence[-1] in TERMINAL or sentence[-1] == '"',
                errors, checks))
    return TextReport(reports)
