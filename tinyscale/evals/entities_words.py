"""Words and text of the entity tracker (`tinyscale.evals.entities`).
One file: the word lists are data, read together with the loader that merges them.

Word lists, from two sources, loaded lazily once (`lexicon()`, cached):

* Link Grammar's English word lists (Debian `link-grammar-dictionaries-en`, in
  `/usr/share/link-grammar/en/words`), when that folder holds them: given names with
  gender (`entities.given-female.sing` ".f", `-male.sing` ".m", `-bisex.sing` ".b": gender
  unknown), gendered person nouns (`entities.people`, "-f"/"-m" tags), countable singular
  nouns (`words.n.1*`), plural nouns (`words.n.2*`), adjectives (`words.adj.*`),
  adverbs (`words.adv.*`), the closed-class words of `../4.0.dict` (common words that
  are no names at a sentence start: Soon, See), place and nation names (no characters);
* the built-in lists below, always: the common given names of children's stories by
  gender (they override Link Grammar's, whose "bisex" list holds e.g. Jack and Mark), the
  person and animal nouns, the toys whose "the" reference needs an introduction, and
  fallback lists of nouns, adjectives and common words, used alone when Link Grammar's
  lists are absent (`Lexicon.source` says which: "link-grammar" or "built-in").

Text: `tokenize` splits words (with their clitics: "Lily's", "didn't"), quotes, . ! ?
and line breaks, and marks each token with its sentence, whether it is sentence-initial
and whether it is inside a quotation (see the rules in `entities`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

LG_WORDS = Path("/usr/share/link-grammar/en/words")
TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*|\"|[.!?]+|\n|[^\sA-Za-z\"]")
QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
ABBREV = frozenset("Mr Mrs Ms Dr St".split())
DETERMINERS = frozenset("a an the his her my their your our some this that".split())
CLITICS = ("'s", "'ll", "'d", "'re", "'ve", "'m")
IRREGULAR = {"children": "child", "men": "man", "women": "woman", "people": "person",
             "mice": "mouse", "feet": "foot", "teeth": "tooth", "geese": "goose",
             "leaves": "leaf", "wolves": "wolf", "knives": "knife", "shelves": "shelf"}

FEMALE = """Abby Ada Alice Alicia Amanda Amelia Amy Ana Angela Anna Anne Annie Ava Bella Betty
Beth Carla Carol Chloe Clara Cora Daisy Diana Dora Eliza Ella Ellie Elsa Emily Emma Eva
Eve Fiona Gina Grace Hannah Harper Hazel Heidi Helen Holly Ida Iris Isabel Isabella Ivy
Jane Janet Jasmine Jen Jenny Jess Jessica Jill Josie Julia Julie Kate Katie Kayla Kelly
Kitty Lara Laura Lea Leah Lena Lila Lily Lilly Linda Lisa Liz Lizzy Lola Lucy Luna Lyla
Maggie Mandy Maria Mary Maya May Meg Megan Mia Mila Millie Molly Nancy Nell Nina Nora Olive
Olivia Pam Penny Pia Polly Poppy Rachel Rita Rosa Rose Rosie Ruby Ruth Sadie Sally Sara
Sarah Sophia Sophie Stella Sue Susan Susie Tara Tessa Tilly Tina Violet Wendy Zara Zoe
Abigail Addison Allison Aria Audrey Bea Brooke Claire Eleanor Elena Evelyn Isla Jade Layla
Lillian Lucia Mabel Mae Madison Natalie Nova Penelope Savannah Scarlett Tess Vera Victoria
Willow Zoey""".split()
MALE = """Adam Al Albert Alfie Andrew Andy Arthur Ben Benny Bill Billy Bob Bobby Brian Bruce
Buddy Carl Charles Chuck Dan Danny Dave David Dylan Eddie Eric Ethan Felix Finn Frank Fred
Freddie Freddy George Gus Hank Harry Henry Hugo Ian Jack Jacob Jake James Jason Jay Jeff
Jerry Jim Jimmy Joe Joey John Johnny Jon Josh Kevin Kyle Larry Leo Leon Liam Louis Lucas
Luke Marco Mark Matt Max Michael Mike Milo Ned Nick Noah Oliver Ollie Oscar Otto Owen Paul
Pete Peter Ralph Ray Rex Rob Robert Roy Rudy Ryan Sid Simon Steve Ted Teddy Theo Tim Timmy
Toby Tom Tommy Tony Walter Will Willy Zack Aaron Aiden Anthony Austin Benjamin Blake
Brandon Caleb Carlos Christopher Colin Connor Daniel Dominic Eli Elijah Evan Ezra Gabriel
Isaac Jamal Jonah Joseph Joshua Julian Kai Levi Logan Marcus Mason Mateo Miles Nate Nathan
Nolan Omar Patrick Sean Sebastian Seth Thomas Tyler Victor Wyatt Zachary""".split()
UNISEX = """Sam Alex Charlie Jamie Jordan Riley Taylor Casey Morgan Quinn Avery Robin Kim Pat
Jo Frankie""".split()

BUILTIN_NAMES = frozenset(FEMALE + MALE + UNISEX)
_F, _M = "f", "m"
PERSONS = {  # person nouns: gender ("f", "m", None)
    **dict.fromkeys("""girl woman lady mom mommy mum mummy mama mother grandma grandmother
        granny nana sister aunt auntie queen princess daughter wife niece witch mermaid
        ballerina bride""".split(), _F),
    **dict.fromkeys("""boy man guy dad daddy papa father grandpa grandfather granddad
        brother uncle king prince son husband gentleman nephew wizard sir lad""".split(), _M),
    **dict.fromkeys("""friend kid child baby toddler teacher farmer doctor nurse neighbor
        neighbour person cousin stranger driver chef cook baker officer pilot captain
        helper owner parent twin fairy giant pirate knight clown judge gardener
        fisherman mailman postman shopkeeper zookeeper policeman fireman firefighter
        astronaut scientist artist painter builder sailor soldier guard lifeguard vet
        dentist librarian principal coach waiter waitress grown-up grownup elf alien
        monster ghost troll goblin dwarf""".split()),
}
ANIMALS = {  # animals: gender unknown unless the noun says it
    **dict.fromkeys("""dog puppy pup doggy cat kitten kitty bird birdie bunny rabbit bear
        fox mouse owl duck duckling frog fish lion tiger elephant monkey horse pony pig
        piglet sheep lamb goat chick chicken turtle snail bug bee butterfly ant spider
        squirrel deer wolf giraffe zebra dragon unicorn dinosaur snake whale dolphin shark
        penguin parrot crow worm ladybug caterpillar hamster goldfish seal octopus crab
        bat beaver camel kangaroo koala panda raccoon robin swan toad""".split()),
    **dict.fromkeys("hen cow mare lioness tigress".split(), _F),
    **dict.fromkeys("rooster bull".split(), _M),
}
SYNONYMS = {"puppy": "dog", "pup": "dog", "doggy": "dog", "kitten": "cat", "kitty": "cat",
            "bunny": "rabbit", "birdie": "bird", "chick": "chicken", "hen": "chicken",
            "rooster": "chicken", "duckling": "duck", "piglet": "pig", "lamb": "sheep",
            "pony": "horse", "mum": "mom", "mommy": "mom", "mama": "mom", "mother": "mom",
            "daddy": "dad", "papa": "dad", "father": "dad", "kid": "child",
            "grandmother": "grandma", "granny": "grandma", "grandfather": "grandpa"}
HYPERNYMS = frozenset("""animal pet creature toy thing stuff object present gift treat food
    snack drink place game""".split())
PLURAL_PERSONS = frozenset("""kids children friends people parents family twins everyone
    boys girls men women brothers sisters animals class team""".split())

TOYS = frozenset("""ball doll kite teddy toy balloon robot puppet crown wand sword treasure
    map necklace ring coin shell drum whistle flute guitar bike wagon sled rocket spaceship
    puzzle block marble""".split())   # story-owned things: "the ball" needs a ball before
FUNCTION = frozenset("""a an the this that these those some any every each no my your his
    her its our their and or but so if then than when while as at in on to for from with
    by of about into onto over under up down out off is was are were be been am will
    would can could should may might must do did does has have had not very too also just
    all both many much more most few lot what who whom which where why how there
    here it he she they we you i me him us them""".split())
START_STOP = frozenset("""will may can hope joy grace faith love june april august sunny
    tiny young long white golden king man son chase pat rush hunt park page art ray
    soon see""".split()) | FUNCTION
ADVERBS = frozenset("""soon then now later suddenly finally slowly quickly again still
    once today tonight yesterday tomorrow maybe please yes no okay oh wow see look ago
    after before""".split())
NOT_NAMES = frozenset("""I I'm I'll I've I'd Mr Mrs Ms Miss Dr Mom Mommy Mum Mummy Mama Dad
    Daddy Papa Grandma Grandpa Granny Nana Aunt Auntie Uncle Sir Madam God OK TV Christmas
    Easter Halloween Monday Tuesday Wednesday Thursday Friday Saturday Sunday January
    February March July September October November December English Once Earth
    Santa""".split())
MONTH_NAMES = frozenset("April May June August".split())   # names unless after "in", ...
TITLES = {"Mr": _M, "Mrs": _F, "Ms": _F, "Miss": _F, "Dr": None, "Aunt": _F,
          "Auntie": _F, "Uncle": _M, "Sir": _M, "Grandma": _F, "Grandpa": _M, "Queen": _F,
          "King": _M, "Princess": _F, "Prince": _M, "Captain": None}

CONCRETE = frozenset("""ball doll kite toy teddy block blocks car truck train boat plane
    bike box bag hat cap coat shoe shoes sock socks shirt dress scarf glove book pen pencil
    crayon crayons paper picture drawing card letter cup bowl plate spoon fork pot pan jar
    bottle basket bucket shovel rope stick stone rock shell key lock chest treasure map
    coin coins ring necklace crown wand sword shield drum bell whistle flute guitar piano
    balloon cake cookie cookies apple apples banana orange cherry pie bread candy sandwich
    pizza soup egg eggs carrot cheese honey juice milk tea ice cream lollipop cupcake
    flower rose seed seeds leaf leaves branch nest web hole cave castle tower bridge boat
    ship tent hut barn fence gate swing slide sandbox pool tub bath blanket pillow chair
    sofa couch lamp clock mirror brush comb towel umbrella rocket robot puzzle game
    present gift button camera computer tablet phone fan bench tractor wagon sled snowman
    cloud rainbow puddle stream mud sand shovel hammer nail ladder bench jacket boot boots
    backpack lunchbox""".split()) | frozenset(ANIMALS)
ADJECTIVES = frozenset("""big small little tiny huge large long short tall old young new
    red blue green yellow pink purple orange brown black white gray grey gold golden silver
    shiny pretty beautiful ugly happy sad angry scared kind nice good bad mean funny silly
    soft hard hot cold warm wet dry dirty clean fast slow loud quiet brave shy sweet yummy
    fluffy furry round square bright dark magic magical special favorite favourite best
    whole empty full heavy light strong weak smart wise poor rich lost broken fat thin
    wooden colorful colourful""".split())


@dataclasses.dataclass(frozen=True)
class Lexicon:
    names: dict[str, str | None]        # given name -> "f", "m" or None
    start_names: frozenset[str]         # given names taken as names at a sentence start
    persons: dict[str, str | None]      # person noun -> gender
    nouns: frozenset[str]               # countable nouns a definite reference is checked on
    plurals: frozenset[str]             # plural nouns
    adjectives: frozenset[str]
    not_names: frozenset[str]           # capitalised words that are no characters
    common: frozenset[str]              # lower-case common words (not nouns)
    source: str                         # "link-grammar" or "built-in"
    known: frozenset[str] = frozenset()  # every word Link Grammar knows (none built in)


def _tokens(path: Path) -> list[str]:
    """The words of one Link Grammar list, without their ".x" subscripts."""
    return [t.split(".")[0].replace("_", " ") for t in path.read_text().split()]


def _words(folder: Path, pattern: str) -> set[str]:
    return {w for f in sorted(folder.glob(pattern)) for w in _tokens(f)}


def _tagged(folder: Path, name: str) -> dict[str, str]:
    """Link Grammar's entities.people: noun -> "f"/"m" from its -f/-m tags."""
    out = {}
    for token in (folder / name).read_text().split():
        word, _, tag = token.partition(".")
        if tag.endswith(("-f", "-m")) and word.islower():
            out[word] = tag[-1]
    return out


def _dict_words(path: Path) -> set[str]:
    """The lower-case words that Link Grammar's main dictionary defines itself (its
    closed-class words and irregular forms: soon, see, then, ...)."""
    if not path.is_file():
        return set()
    text = re.sub(r"%[^\n]*", "", path.read_text(errors="replace"))
    return set(re.findall(r"(?<![A-Za-z<>_.])([a-z]+)(?:\.[a-z]+)?(?=[\s:])", text))


def _lg_names(folder: Path) -> dict[str, str | None]:
    names: dict[str, str | None] = dict.fromkeys(_words(folder, "entities.given-bisex.sing"))
    names.update(dict.fromkeys(_words(folder, "entities.given-female.sing"), _F))
    names.update(dict.fromkeys(_words(folder, "entities.given-male.sing"), _M))
    return names


@functools.cache
def lexicon(folder: Path = LG_WORDS) -> Lexicon:
    """The word lists: Link Grammar's merged with the built-in ones when `folder` holds
    them, the built-in ones alone otherwise."""
    builtin = {**dict.fromkeys(FEMALE, _F), **dict.fromkeys(MALE, _M)}
    unisex: dict[str, str | None] = dict.fromkeys(UNISEX)
    if not (folder / "entities.given-female.sing").is_file():
        builtin = {**unisex, **builtin}
        return Lexicon(builtin, frozenset(n for n in builtin if n.lower() not in START_STOP),
                       dict(PERSONS), CONCRETE, frozenset(), ADJECTIVES, NOT_NAMES,
                       FUNCTION | ADVERBS | ADJECTIVES | START_STOP, "built-in")
    adjectives = _words(folder, "words.adj.*") | ADJECTIVES
    common = _dict_words(folder.parent / "4.0.dict") | _words(folder, "words.adv.*") | \
        adjectives | ADVERBS | START_STOP
    names = {**unisex, **_lg_names(folder), **builtin}
    start = {n for n in names if n.lower() not in START_STOP
             and (n in builtin or n.lower() not in common)}
    persons = {**{w: g for w, g in _tagged(folder, "entities.people").items()
                  if w not in ANIMALS}, **PERSONS}
    places = _words(folder, "entities.locations.sing") | _words(
        folder, "entities.national.sing")
    return Lexicon(names, frozenset(start), persons,
                   frozenset(_words(folder, "words.n.1*")) | CONCRETE,
                   frozenset(_words(folder, "words.n.2*")), frozenset(adjectives),
                   NOT_NAMES | (places - set(names)), frozenset(common), "link-grammar",
                   frozenset(_words(folder, "words.*") | _dict_words(folder.parent / "4.0.dict")))


# text -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Tok:
    text: str
    start: int
    sent: int
    initial: bool        # first word of a sentence or quotation
    quoted: bool

    @property
    def word(self) -> bool:
        return self.text[0].isalpha()


def bare(word: str) -> str:
    """The word without a clitic: Lily's -> Lily, he'll -> he."""
    return next((word[:-len(c)] for c in CLITICS if word.lower().endswith(c)), word)


def singular(word: str) -> str:
    """Lower-case singular: cookies -> cookie, children -> child."""
    w = bare(word).lower()
    w = IRREGULAR.get(w, w)
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("ches", "shes", "sses", "xes")):
        return w[:-2]
    return w[:-1] if w.endswith("s") and not w.endswith(("ss", "us", "is")) \
        and len(w) > 3 else w


def lemma(word: str) -> str:
    """The singular, with animal and family synonyms merged (puppies -> dog)."""
    return SYNONYMS.get(singular(word), singular(word))


def tokenize(text: str) -> list[Tok]:
    """Tokens of `text` (curly quotes read as straight ones) with sentence and quote
    marks: a sentence ends at . ! ? outside quotes (not after Mr., ...) or a line break,
    which also closes a quotation."""
    toks: list[Tok] = []
    sent, initial, quoted, fresh = 0, True, False, True   # fresh: no word since sent += 1
    for m in TOKEN.finditer(text.translate(QUOTES)):
        t = m.group()
        toks.append(Tok(t, m.start(), sent, initial, quoted))
        if t[0].isalpha():
            initial = fresh = False
        elif t == '"':
            quoted = not quoted
            initial = initial or quoted
        elif t == "\n" or (t[0] in ".!?" and not quoted and not (
                t == "." and len(toks) > 1 and toks[-2].text in ABBREV)):
            sent, initial, fresh = sent + (not fresh), True, True
            quoted = quoted and t != "\n"
        elif t[0] in ".!?":
            initial = True
    return toks


def prev_words(toks: list[Tok], i: int, n: int) -> list[int]:
    """Up to n words before token i in its sentence, nearest first (commas and the
    dot of "Mr." skipped)."""
    out: list[int] = []
    for j in range(i - 1, max(-1, i - 3 * n), -1):
        tok = toks[j]
        if tok.sent != toks[i].sent or len(out) == n:
            break
        if tok.word:
            out.append(j)
        elif tok.text != "," and not (tok.text == "." and toks[j - 1].text in ABBREV):
            break
    return out


def after_determiner(toks: list[Tok], lex: Lexicon, i: int) -> bool:
    """Whether a determiner or a possessive ("Rita's") comes before word i, over
    adjectives only."""
    for j in prev_words(toks, i, 3):
        word = toks[j].text
        if word.lower() in DETERMINERS or word.endswith("'s"):
            return True
        if word.lower() not in lex.adjectives:
            return False
    return False


def noun_like(lex: Lexicon, word: str) -> bool:
    """A content word whose lemma is a countable, person or animal noun."""
    lem = lemma(word)
    return word.lower() not in FUNCTION and (
        lem in lex.nouns or lem in lex.persons or lem in ANIMALS)


def head(toks: list[Tok], lex: Lexicon, i: int) -> list[int]:
    """The head noun after "the" at i (and the noun after it, if any), else []."""
    run = []
    for j in range(i + 1, min(i + 5, len(toks))):
        if not toks[j].word or toks[j].text.lower() in FUNCTION:
            break
        run.append(j)
    for k, j in enumerate(run):
        word, nxt = toks[j].text, run[k + 1] if k + 1 < len(run) else None
        noun_next = nxt is not None and noun_like(lex, toks[nxt].text)
        if noun_next and (word.lower() in lex.adjectives or word.endswith("ly")):
            continue
        if not noun_like(lex, word):
            return []
        return [j, nxt] if noun_next else [j]
    return []
