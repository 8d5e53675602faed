"""Entity tracking for real English: do a completion's mentions fit its story?
One file: the rules written out below and the one tracker that applies them.

`track(prompt, completion)` reads the prompt and then the completion as one text (the
prompt is cut mid-sentence, the completion goes on from there) and checks each mention
the completion makes against the story so far. The word lists (given names with gender,
person, animal and countable nouns, adjectives, common words) are Link Grammar's English
ones merged with built-in lists when `link-grammar-dictionaries-en` is installed, the
built-in lists alone otherwise; the tokenizer and the lists: `entities_words`.

Reading. Curly quotes become straight ones. A sentence ends at . ! ? outside quotes (not
after Mr, Mrs, Ms, Dr, St) or at a line break, which also closes an open quotation (a
quotation belongs to the sentence around it). A word is *sentence-initial* at the start of
a sentence, of a quotation or after . ! ? inside one. "Lily's" is Lily, "he's" is he.

Characters, from the prompt and then from the completion as it goes:
* names: a capitalised word that is not sentence-initial (except I, titles, family
  words, days, months after "in"/"on", holidays, places, nations), a word after a title
  (Mr., Aunt, ...), a known character anywhere, and a sentence-initial given name (not
  one that is a common word there: Soon, See, Hope, ...; Will, May, June, Grace count
  when a content word follows, as in "June woke up"; not a word the story has used in
  lower case: "honey ... Honey is sweet"); a sentence-initial word that stands
  capitalised mid-sentence elsewhere in the text, or that Link Grammar's dictionary does
  not know (not ending in -ed, -ing, -ly: "Bodhi looked"), is a name too. Gender: from
  the person noun that introduces it ("a girl named Sue", "his sister Ava"), a title,
  the given-name lists, else from the first he/she resolved to it;
* person nouns (girl, mom, teacher, ...): gender from the noun, plural when plural;
* animals (dog, bird, ...; not after toy/teddy/stuffed): gender unknown until a he/she
  is resolved to them, "it" (no he/she character) once an "it" follows them.
Objects: every word of the story so far counts as introduced (by lemma: "cookies" is
cookie, "puppy" is dog), whatever its determiner.

Mentions of the completion that are checked (`checks`), and when each is an error:
1. every name: "new name 'Zoe'" when it is no character of the story so far and is not
   introduced where it stands ("named Zoe", "called her Zoe", "her name was Zoe", "I'm
   Zoe", "this is Zoe", "her friend Zoe", "a dog, Zoe", "Zoe, her little dog"); each
   later mention too;
2. every he/him/his/himself, she/her/hers/herself outside quotes ("it" is not scored).
   The focus: the characters mentioned (by name, noun or resolved pronoun; not inside
   quotes) in its sentence or the FOCUS sentences before; for he/she in a sentence that
   names a character before it, that sentence's characters only. It resolves to a
   character in focus of its gender, else of unknown gender (one known by a noun only, as
   "the teacher" or "a bird", only if it is the most recent), which then takes its
   gender; else to one anywhere. Errors: "'she' fits no character" (none anywhere),
   "'she' fits no character in focus" (the focus has characters, none fits), "'his' does
   not fit Lily" (a possessive whose sentence so far mentions one character only, named
   or by noun, of the other gender);
3. every they/them/their/theirs/themselves outside quotes: "'they' fits no group" when
   the story so far has at most one character and no plural noun;
4. every "the X" outside quotes whose head X (after adjectives; "the toy box" also tries
   "box") is singular and an animal, a gendered person noun or a toy ("story-owned"
   things: ball, doll, kite, ...): "'the ball' was never introduced" unless X is a word
   of the story so far, a general noun (animal, toy, pet, ...), followed by "of", or a
   gendered person noun with a character of that gender ("the girl" for Lily). Every
   other noun (places, furniture, parts, nature, the sun, plurals) is taken as
   world-known or bridged ("the barn" on a farm, "the lid" of a box) and not checked:
   true stories bridge to such nouns all the time (docs/results.md has the count).
score = 1 - errors / checks (1.0 with no checks).
"""

from __future__ import annotations

import dataclasses

from tinyscale.evals import entities_words as lx
from tinyscale.evals.entities_words import Tok, bare, lemma, singular, tokenize

FOCUS = 1   # sentences before the current one whose characters are in focus
_GENDERED = {"he": "m", "him": "m", "his": "m", "himself": "m",
             "she": "f", "her": "f", "hers": "f", "herself": "f"}
_PLURAL = frozenset("they them their theirs themselves".split())
_INTRO = frozenset("name named names call called calls".split())
_TOY = frozenset("teddy toy stuffed".split())   # "a teddy bear" is no animal


@dataclasses.dataclass(frozen=True)
class EntityScore:
    checks: int          # mentions in the completion that were checked
    errors: list[str]    # one short readable reason per inconsistent mention

    @property
    def score(self) -> float:
        return 1.0 - len(self.errors) / self.checks if self.checks else 1.0


@dataclasses.dataclass
class _Char:
    gender: str | None   # "f", "m", "n" (an "it"), None: unknown
    plural: bool = False
    animal: bool = False
    intruder: bool = False


class _Story:
    def __init__(self, toks: list[Tok], boundary: int, lex: lx.Lexicon):
        self.toks, self.boundary, self.lex = toks, boundary, lex
        self.chars: dict[str, _Char] = {}
        self.mentions: list[tuple[int, str, bool]] = []   # (sentence, key, by pronoun)
        self.seen: set[str] = set()          # words and lemmas so far
        self.lower_seen: set[str] = set()    # words seen in lower case
        self.plural_seen = False
        self.last_noun = ""                  # the last noun mentioned (a character key)
        self.errors: list[str] = []
        self.checks = 0
        # capitalised words that stand mid-sentence somewhere: names wherever they stand
        self.midnames = {b for b in (bare(t.text) for t in toks if t.word and not t.initial)
                         if b[:1].isupper() and not b.isupper() and b not in lex.not_names
                         and b.lower() not in lex.persons and b.lower() not in lx.FUNCTION}

    def run(self) -> EntityScore:
        for i, tok in enumerate(self.toks):
            if tok.word:
                self._word(i, tok)
        return EntityScore(self.checks, self.errors)

    def _judge(self, tok: Tok, error: str | None) -> None:
        if tok.start >= self.boundary:
            self.checks += 1
            if error:
                self.errors.append(error)

    def _word(self, i: int, tok: Tok) -> None:
        base, lem = bare(tok.text), lemma(tok.text)
        low = base.lower()
        if low in _GENDERED or low in _PLURAL:
            if not tok.quoted:
                self._pronoun(i, tok, low)
        elif low in ("it", "its"):
            self._it(tok)
        elif self._is_name(i, base):
            self._name(i, tok, base)
        elif (lem in self.lex.persons or lem in lx.ANIMALS or low in lx.PLURAL_PERSONS) \
                and not (i and self.toks[i - 1].text.lower() in _TOY):
            self._noun_char(low, lem, tok)
        elif lem in self.lex.nouns and lx.after_determiner(self.toks, self.lex, i):
            self.last_noun = ""
        if low == "the" and not tok.quoted and tok.start >= self.boundary:
            self._definite(i)
        self.seen.update((low, lem))
        if tok.text.islower():
            self.lower_seen.add(low)
        self.plural_seen |= low in self.lex.plurals or (
            low != singular(low) and lem in self.lex.nouns)

    # characters -----------------------------------------------------------------------
    def _mention(self, key: str, tok: Tok, pronoun: bool = False) -> None:
        if not tok.quoted:
            self.mentions.append((tok.sent, key, pronoun))
        self.last_noun = key

    def _noun_char(self, low: str, lem: str, tok: Tok) -> None:
        plural = low in lx.PLURAL_PERSONS or low != singular(low)
        key = lem + ("+" if plural else "")
        if key not in self.chars:
            gender = None if plural else self.lex.persons.get(lem, lx.ANIMALS.get(lem))
            self.chars[key] = _Char(gender, plural, lem in lx.ANIMALS)
        self._mention(key, tok)

    def _is_name(self, i: int, base: str) -> bool:
        if not base[0].isupper() or (len(base) > 1 and base.isupper()):
            return False
        if base in self.chars or self._title(i) is not None:
            return True
        low, prev = base.lower(), self.toks[i - 1].text.lower() if i else ""
        if base in self.lex.not_names or low in self.lex.persons or low in lx.FUNCTION or (
                base in lx.MONTH_NAMES and prev in lx.FUNCTION):
            return False
        if not self.toks[i].initial:
            return True
        if low in self.lower_seen:
            return False
        if base in self.midnames or (  # a word the dictionary does not know: a name
                low not in self.lex.known and lemma(low) not in self.lex.known
                and self.lex.known and not low.endswith(("ed", "ing", "ly"))):
            return True
        nxt = self.toks[i + 1].text if i + 1 < len(self.toks) else ""
        return base in self.lex.start_names or (
            (base in lx.MONTH_NAMES or base in lx.BUILTIN_NAMES) and nxt.islower()
            and nxt not in lx.FUNCTION and nxt not in lx.ADVERBS and not nxt.endswith("ly"))

    def _title(self, i: int) -> str | None:
        """The title before token i ("Mr" in "Mr. Brown", "Aunt" in "Aunt Sue")."""
        prev = [t.text for t in self.toks[max(0, i - 2):i]]
        if len(prev) == 2 and prev[0] in lx.ABBREV and prev[1] == ".":
            return prev[0]
        return prev[-1] if prev and prev[-1] in lx.TITLES else None

    def _name_gender(self, i: int, base: str) -> str | None:
        """From the noun that introduces it ("a girl named", "his sister"), a title, or
        the given-name lists."""
        prev = [self.toks[j].text for j in lx.prev_words(self.toks, i, 4)]
        for word in prev[1:] if prev and prev[0].lower() in _INTRO else prev[:1]:
            gender = self.lex.persons.get(lemma(word), lx.ANIMALS.get(lemma(word), "?"))
            if gender != "?":
                return gender or self.lex.names.get(base)
        title = self._title(i)
        return lx.TITLES[title] if title else self.lex.names.get(base)

    def _introduced(self, i: int) -> bool:
        """Named where it stands (see the module doc; a title before it is skipped)."""
        prev = lx.prev_words(self.toks, i, 3)
        if prev and self.toks[prev[0]].text in lx.TITLES:
            prev = prev[1:]
        words = [self.toks[j].text.lower() for j in prev] + ["", ""]
        noun = lemma(words[0]) in self.lex.persons or lemma(words[0]) in lx.ANIMALS
        if self._apposition(i):
            return True
        return bool(_INTRO.intersection(words)) or words[0] in ("i'm", "am") or \
            words[:2] == ["is", "this"] or (
                noun and lx.after_determiner(self.toks, self.lex, prev[0]))

    def _apposition(self, i: int) -> bool:
        """"Rufus, their big yellow dog": a comma, then a person or animal noun within a
        few words."""
        after = [t.text for t in self.toks[i + 1:i + 7]]
        if not after or after[0] != ",":
            return False
        for word in after[1:]:
            if not word[:1].isalpha():
                return False
            if lemma(word) in self.lex.persons or lemma(word) in lx.ANIMALS:
                return True
        return False

    def _name(self, i: int, tok: Tok, base: str) -> None:
        char = self.chars.get(base)
        if char is None:
            char = self.chars[base] = _Char(self._name_gender(i, base))
            char.intruder = tok.start >= self.boundary and not self._introduced(i)
        self._mention(base, tok)
        self._judge(tok, f"new name '{base}'" if char.intruder else None)

    # pronouns ---------------------------------------------------------------------------
    def _singles(self, keys: list[str]) -> list[str]:
        """Distinct singular he/she characters of `keys`, last first."""
        return [k for k in dict.fromkeys(reversed(keys))
                if not self.chars[k].plural and self.chars[k].gender != "n"]

    def _focus(self, tok: Tok, subject: bool) -> list[str]:
        """The characters in focus at a pronoun, most recent first (see the module doc)."""
        current = [(k, p) for s, k, p in self.mentions if s == tok.sent]
        if subject and any(not p for _, p in current):
            return self._singles([k for k, _ in current])
        return self._singles([k for s, k, _ in self.mentions if s >= tok.sent - FOCUS])

    def _pronoun(self, i: int, tok: Tok, low: str) -> None:
        if low in _PLURAL:
            people = [c for c in self.chars.values() if c.gender != "n"]
            group = len(people) > 1 or any(c.plural for c in people) or self.plural_seen
            self._judge(tok, None if group else f"'{low}' fits no group")
            return
        gender = _GENDERED[low]
        error = self._possessive(i, low, gender)
        self._judge(tok, self._resolve(tok, low, gender) or error)

    def _possessive(self, i: int, low: str, gender: str) -> str | None:
        """The error of a possessive whose sentence so far mentions one character only,
        named or by noun, of the other gender."""
        nxt = self.toks[i + 1].text if i + 1 < len(self.toks) else ""
        if low not in ("his", "her") or not nxt[:1].islower() or nxt in lx.FUNCTION or (
                low == "her" and (nxt in self.lex.common or not lx.noun_like(self.lex, nxt))):
            return None   # not a possessive ("gave her a hug", "held her close")
        sent = self.toks[i].sent
        current = {k for s, k, _ in self.mentions if s == sent}
        named = [k for s, k, p in self.mentions if s == sent and not p]
        other = self.chars[named[0]].gender if named and len(current) == 1 else None
        return f"'{low}' does not fit {named[0]}" if other in ("f", "m") and \
            other != gender else None

    def _resolve(self, tok: Tok, low: str, gender: str) -> str | None:
        """Resolve he/she (the character is then mentioned); the error, if any."""
        focus = self._focus(tok, low in ("he", "she"))
        key, error = self._pick(focus, gender), None
        if key is None:
            last = {k: n for n, (_, k, _) in enumerate(self.mentions)}
            key = self._pick(self._singles(sorted(self.chars, key=lambda k: last.get(k, -1))),
                             gender, focus=False)
            if key is None:
                return f"'{low}' fits no character"
            error = f"'{low}' fits no character in focus" if focus else None
        self.chars[key].gender = gender
        self._mention(key, tok, pronoun=True)
        return error

    def _pick(self, keys: list[str], gender: str, focus: bool = True) -> str | None:
        """The first of `keys` of that gender, else the first of unknown gender (in
        focus, one known by a noun only if it is the most recent)."""
        key = next((k for k in keys if self.chars[k].gender == gender), None)
        return key or next((k for n, k in enumerate(keys) if self.chars[k].gender is None
                            and not (focus and n and k.islower())), None)

    def _it(self, tok: Tok) -> None:
        """An animal that "it" follows as the last noun mentioned is an "it"."""
        char = self.chars.get(self.last_noun)
        if char and char.animal and char.gender is None and not tok.quoted:
            char.gender = "n"

    # definite references --------------------------------------------------------------
    def _checked(self, words: list[str]) -> bool:
        """A singular head that is an animal, a toy or a gendered person noun."""
        lemmas = [lemma(w) for w in words]
        return singular(words[-1]) == bare(words[-1]).lower() and any(
            w in lx.ANIMALS or w in lx.TOYS or self.lex.persons.get(w) in ("f", "m")
            for w in lemmas)

    def _definite(self, i: int) -> None:
        head = lx.head(self.toks, self.lex, i)
        if not head or not self._checked([self.toks[j].text for j in head]):
            return
        after = self.toks[head[0] + 1].text if head[0] + 1 < len(self.toks) else ""
        ok = any(self._known(lemma(self.toks[j].text)) for j in head) or (
            len(head) == 1 and after == "of")
        words = " ".join(self.toks[j].text for j in head)
        self._judge(self.toks[i], None if ok else f"'the {words}' was never introduced")

    def _known(self, lem: str) -> bool:
        if lem in self.seen or lem in lx.HYPERNYMS:
            return True
        gender = self.lex.persons.get(lem)
        return gender in ("f", "m") and any(
            c.gender == gender and not c.animal for c in self.chars.values())


def track(prompt: str, completion: str) -> EntityScore:
    """Score the mentions of `completion`, read after `prompt` (see the module doc)."""
    return _Story(tokenize(prompt + completion), len(prompt), lx.lexicon()).run()
