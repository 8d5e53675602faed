"""Entity tracking for real English (tinyscale.evals.entities): hand-written cases with
their exact error counts, and on the English story files, how often a true continuation
scores above the same continuation with its names or its genders swapped, and above the
continuation of another story."""

import re
from pathlib import Path

import pytest

from tinyscale.evals import entities, entities_words
from tinyscale.evals.entities import EntityScore, track

STORIES = Path(__file__).parent / "data" / "english_stories"

# (prompt, completion, checks, errors, a substring of the first error or None)
CASES = [
    # names: from the prompt, introduced in the completion, or new
    ("Once upon a time, there was a girl named Lily. Lily", " liked to play with Tom.",
     1, 1, "new name 'Tom'"),
    ("Tim had a red ball. One day,", " Tim went to the park.", 1, 0, None),
    ("Lily went to the park.", " There she met a new friend named Zoe. Zoe was kind.",
     3, 0, None),
    ("Ben found a puppy.", " He called it Max. Max barked.", 3, 0, None),
    ("Sue sat on a bench.", ' A girl came and said, "My name is Mia." Mia and Sue played.',
     3, 0, None),
    ("Rita made popcorn.", " Rita's dog, Biscuit, ran under the table.", 2, 0, None),
    ("Lily had a doll.", " Zoe took it. Zoe ran away.", 2, 2, "new name 'Zoe'"),
    ("Anna and her mom baked a cake.", ' "Thank you, Rosa!" said Anna.', 2, 1,
     "new name 'Rosa'"),
    ("The children sat down.", " Mr. Brown came in.", 1, 1, "new name 'Brown'"),
    ("Max had a kite.", " Max's kite flew high.", 1, 0, None),
    # sentence-initial words: known given names are names, common words are not
    ("Tom went to the beach.", " Sara ran to him.", 2, 1, "new name 'Sara'"),
    ("Zoe liked to paint.", " Zoe painted a tree.", 1, 0, None),
    ("Ben was sad.", " Soon he felt better.", 1, 0, None),
    ("Kate saw a boy.", ' "Will you play with me?" she asked.', 1, 0, None),
    ("Ben waited all year.", " In June, he went to the sea.", 1, 0, None),
    ("The bear loved honey.", " Honey was sweet.", 0, 0, None),
    ("Ben saw a sign.", ' It said "STOP".', 0, 0, None),
    # pronouns and gender: named and common-noun characters
    ("Tom and his dad went fishing. Tom", " ate an apple. She was happy.", 1, 1,
     "'she' fits no character"),
    ("The little girl had a red hat.", " She put it on.", 1, 0, None),
    ("An old man lived in a small house.", " She liked to sing.", 1, 1,
     "'she' fits no character"),
    ("There was a girl named Bimba.", " He smiled.", 1, 1, "'he' fits no character"),
    ("Kiro liked to run. He ran every day.", " She ran fast.", 1, 1,
     "'she' fits no character"),
    ("There was a cat. She was soft and white.", " She liked milk.", 1, 0, None),
    ("Tom saw a bird. It was blue.", " She sang a song.", 1, 1, "'she' fits no character"),
    ("Sam had a dog named Rex. Rex", " wagged his tail.", 1, 0, None),
    ("Mia and her dad went to the park. Dad", " bought ice cream. He read a book. Then"
     " he sat down. She smiled.", 3, 1, "'she' fits no character in focus"),
    ("Ben and Lily played.", " Ben gave her a flower.", 2, 0, None),
    ("Ben and Lily played.", " Ben lost her ball.", 2, 1, "'her' does not fit Ben"),
    # pronouns inside quotes are not scored
    ("Tom met his dad.", ' "Did you see her?" Tom asked.', 1, 0, None),
    ("Sam saw his sister.", " \u201cHi, he is here!\u201d she said.", 1, 0, None),
    # they / them
    ("Tom and Lily went outside.", " They played tag.", 1, 0, None),
    ("The kids ran to the park.", " They were happy.", 1, 0, None),
    ("Tom was alone.", " They played tag.", 1, 1, "'they' fits no group"),
    # contractions
    ("Lily looked at the box.", " She didn't know what was inside. She'd never seen it.",
     2, 0, None),
    ("Tom and his mom sat down.", " He's tired, and he'll sleep soon.", 2, 0, None),
    # definite references
    ("Tom had a red ball.", " He threw the ball.", 2, 0, None),
    ("Tom went outside.", " He kicked the ball.", 2, 1, "'the ball' was never introduced"),
    ("Lily went to the park.", " The sun was warm and the sky was blue.", 0, 0, None),
    ("Ben had a puppy.", " The dog licked his face.", 2, 0, None),
    ("Ben played in the garden.", " Then the dog barked.", 1, 1,
     "'the dog' was never introduced"),
    ("Lily sat on a bench.", " The girl smiled.", 1, 0, None),
    ("Lily sat on a bench.", " The man smiled.", 1, 1, "'the man' was never introduced"),
    ("Sue walked to school.", " The birds sang.", 0, 0, None),
    ("Tom looked around.", ' "Where is the cat?" he asked.', 1, 0, None),
    ("A small mouse lived in the woods.", " One day, she met the king of the forest.",
     2, 0, None),
    ("Ella put her blocks in a box.", " Later she opened the toy box.", 2, 0, None),
    # paragraphs; a line break closes a quotation
    ("Max found a shell on the beach.\n\nThe next day,", " Max showed it to his mom.\n"
     "She loved it.", 3, 0, None),
    ('Tim shouted, "Come here!\n', "He waved.", 1, 0, None),
    # nothing to check
    ("Lily had a cat.", "", 0, 0, None),
    ("Tom ran home.", " It was late and dark.", 0, 0, None),
]


@pytest.fixture(params=["link-grammar", "built-in"])
def lexicon(request, monkeypatch, tmp_path):
    """Each case under both word sources: Link Grammar's lists (when installed) and the
    built-in ones alone."""
    if request.param == "built-in":
        builtin = entities_words.lexicon(tmp_path)
        monkeypatch.setattr(entities.lx, "lexicon", lambda: builtin)
    elif entities_words.lexicon().source != "link-grammar":
        pytest.skip("link-grammar-dictionaries-en is not installed")
    return entities.lx.lexicon()


@pytest.mark.parametrize("prompt,completion,checks,errors,reason", CASES)
def test_cases(lexicon, prompt, completion, checks, errors, reason):
    result = track(prompt, completion)
    assert (result.checks, len(result.errors)) == (checks, errors), result
    if reason:
        assert reason in result.errors[0]


def test_the_cases_cover_the_rules():
    assert len(CASES) >= 40
    assert len({reason.split("'")[-1] for *_, reason in CASES if reason}) >= 6


def test_score_is_the_share_of_consistent_mentions():
    assert EntityScore(4, ["x"]).score == 0.75
    assert EntityScore(0, []).score == 1.0
    assert track("Tom went outside.", " He kicked the ball.").score == 0.5


def test_the_built_in_lexicon_stands_alone(tmp_path):
    lex = entities_words.lexicon(tmp_path)
    assert lex.source == "built-in"
    assert lex.names["Lily"] == "f" and lex.names["Tom"] == "m" and "Sam" in lex.names
    assert len([n for n, g in lex.names.items() if g == "f"]) >= 100
    assert len([n for n, g in lex.names.items() if g == "m"]) >= 100


def test_link_grammar_lists_are_read_when_installed():
    lex = entities_words.lexicon()
    if lex.source != "link-grammar":
        pytest.skip("link-grammar-dictionaries-en is not installed")
    assert lex.names["Abigail"] == "f" and lex.names["Abraham"] == "m"
    assert lex.names["Jack"] == "m"          # the built-in list overrides "bisex"
    assert lex.persons["duchess"] == "f" and "soon" in lex.common
    assert "Soon" not in lex.start_names and "Lily" in lex.start_names


# --- the story files: true continuations against corrupted ones -------------------------
_SENTENCE = re.compile(r'[^.!?]*[.!?]+"?\s*')
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_POOL = {"f": "Nora Tessa Greta Ines Olga Priya Wanda Yara Hilda Freya".split(),
         "m": "Oswald Boris Dmitri Hamish Ignatius Rufus Cyril Quentin Lars Bruno".split()}
_SWAP = {"he": "she", "she": "he", "him": "her", "his": "her", "himself": "herself",
         "herself": "himself", "hers": "his"}


def read_stories() -> list[str]:
    stories = []
    for path in sorted(STORIES.glob("stories_*.txt")):
        text = path.read_text(encoding="utf-8")
        stories += [s.strip() for s in text.split("<|endoftext|>") if s.strip()]
    return stories


def split_story(story: str) -> tuple[str, str] | None:
    """Prompt and continuation, cut before the middle word of the middle sentence."""
    sentences = list(_SENTENCE.finditer(story))
    if not sentences:
        return None
    middle = sentences[len(sentences) // 2]
    words = list(_WORD.finditer(story, middle.start(), middle.end()))
    if not words:
        return None
    cut = words[len(words) // 2].start()
    return story[:cut].rstrip(" "), story[len(story[:cut].rstrip(" ")):]


def story_names(story: str) -> set[str]:
    """Given names of the lists, and capitalised words that do not start a sentence."""
    names, lex = set(), entities_words.lexicon()
    for m in _WORD.finditer(story):
        word, before = m.group().split("'")[0], story[:m.start()].rstrip()
        mid = bool(before) and before[-1] not in '.!?"\n'
        if word[0].isupper() and not word.isupper() and word not in lex.not_names and \
                word.lower() not in entities_words.FUNCTION and (word in lex.names or mid):
            names.add(word)
    return names


def swap_names(prompt: str, continuation: str) -> str:
    """Every name of the story replaced, in the continuation, by an unused one of the
    same gender."""
    names = story_names(prompt + continuation)
    used, mapping = set(names), {}
    for name in sorted(names):
        other = next(n for n in _POOL[entities_words.lexicon().names.get(name) or "f"]
                     if n not in used)
        used.add(other)
        mapping[name] = other
    return re.sub(r"[A-Za-z]+", lambda m: mapping.get(m.group(), m.group()), continuation)


def swap_gender(text: str) -> str:
    """he <-> she, him/his <-> her (her before a content word is his, else him), ..."""
    def swap(m: re.Match) -> str:
        word, following = m.group(1), (m.group(2) or "").lower()
        low = word.lower()
        if low == "her":
            new = "his" if following and following not in entities_words.FUNCTION else "him"
        elif low in _SWAP:
            new = _SWAP[low]
        else:
            return word
        return new.capitalize() if word[0].isupper() else new
    return re.sub(r"\b([A-Za-z]+)\b(?=(?:\s+([A-Za-z]+))?)", swap, text)


def win_rates() -> tuple[int, dict[str, float]]:
    pairs = [p for p in map(split_story, read_stories()) if p]
    n, wins = len(pairs), dict.fromkeys(("other", "names", "gender"), 0.0)
    for i, (prompt, true) in enumerate(pairs):
        score = track(prompt, true).score
        for kind, corrupted in (("other", pairs[(i + n // 2) % n][1]),
                                ("names", swap_names(prompt, true)),
                                ("gender", swap_gender(true))):
            other = track(prompt, corrupted).score
            wins[kind] += 1.0 if score > other else 0.5 if score == other else 0.0
    return n, {kind: w / n for kind, w in wins.items()}


def test_the_corruptions_change_what_they_should():
    prompt, true = "Lily and her brother Tom went out.", " Tom gave her a ball, and she smiled."
    assert swap_names(prompt, true) == " Oswald gave her a ball, and she smiled."
    assert swap_gender(true) == " Tom gave him a ball, and he smiled."
    assert swap_gender(" He took her hat.") == " She took his hat."
    assert split_story("One. Two three four. Five.") == ("One. Two", " three four. Five.")


def test_true_continuations_win_over_corrupted_ones():
    if len(read_stories()) < 100:
        pytest.skip("fewer than 100 stories in tests/data/english_stories")
    if entities_words.lexicon().source != "link-grammar":
        pytest.skip("rates measured with link-grammar-dictionaries-en installed")
    n, rates = win_rates()
    print(f"{n} stories: {rates}")
    assert rates["names"] >= 0.90
    assert rates["gender"] >= 0.90
    assert rates["other"] >= 0.75
