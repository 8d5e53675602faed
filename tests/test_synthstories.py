import random
import re

import pytest

from tinyscale.data.synthstories import grammar as synth_grammar
from tinyscale.data.synthstories import lexicon as synth_lexicon
from tinyscale.data.synthstories import stories, story
from tinyscale.data.synthstories.corrupt import CORRUPTIONS
from tinyscale.data.synthstories.validate import validate

N_STORIES = 300


@pytest.fixture(scope="module")
def corpus():
    return [s.text for s in stories(N_STORIES, seed=11)]


def test_same_seed_same_bytes_and_seeds_differ():
    a = [s.text.encode() for s in stories(20, seed=5)]
    b = [s.text.encode() for s in stories(20, seed=5)]
    c = [s.text.encode() for s in stories(20, seed=6)]
    assert a == b
    assert not set(a) & set(c)
    assert story(3, seed=5).text == stories(1, seed=5, start=3).__next__().text
    assert story(0, split="train").text != story(0, split="eval").text


def test_corpus_is_rich_enough(corpus):
    more = [s.text for s in stories(2000, seed=12)]
    words = {w.lower() for text in more for w in re.findall(r"[A-Za-z']+", text)}
    print(f"\nword types in 2,000 stories: {len(words)}")
    assert len(words) >= 1000
    assert len(synth_lexicon.GIRL_NAMES) + len(synth_lexicon.BOY_NAMES) >= 50
    patterns = synth_grammar.SENTENCE_PATTERNS
    assert len(patterns) >= 100
    lengths = [len(t.split()) for t in corpus]
    print(f"story length in words: {min(lengths)}-{max(lengths)}")
    assert 60 <= min(lengths) and max(lengths) <= 300
    assert len(set(corpus)) == len(corpus)


def test_story_records_match_text(corpus):
    s = story(7, seed=11)
    for name in s.characters:
        assert name in s.text
    for noun in s.objects:
        assert f" {noun}" in s.text


def test_validator_accepts_every_generated_story(corpus):
    rejected = [t for t in corpus if not validate(t).valid]
    print(f"\nvalidator accepts {N_STORIES - len(rejected)}/{N_STORIES} generated stories")
    assert not rejected


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_validator_flags_corruptions(corpus, kind):
    rng = random.Random(kind)
    corrupted = [c for t in corpus if (c := CORRUPTIONS[kind](t, rng)) is not None]
    assert len(corrupted) >= 0.9 * len(corpus), "corruption should apply to most stories"
    flagged = sum(not validate(c).valid for c in corrupted)
    print(f"\n{kind}: flagged {flagged}/{len(corrupted)} = {flagged / len(corrupted):.1%}")
    assert flagged / len(corrupted) >= 0.95


def test_validator_reports_details():
    report = validate("There was once a boy named Lily. One sunny morning, she went to the park.")
    assert report.grammatical and not report.consistent
    report = validate("Once upon a time, there was a girl named Mia. He smiled.")
    assert report.sentences[1].errors == ["'he' does not fit Mia"]
    report = validate("Mia found a ball. Then the kite")
    assert not report.sentences[-1].complete
    bad = validate("Mia went the to park.").sentences[0]
    assert not bad.grammatical and bad.prefix == 2 and 0 < bad.prefix_share < 1


def test_continuation_is_read_after_its_context():
    context = "Once upon a time, there was a girl named Mia. One day, she found a red"
    report = validate(" ball in the park. Mia loved her red ball very much.", context=context)
    assert len(report.sentences) == 2 and report.valid
    assert not validate(" ball in the park. Mia loved her red kite very much.",
                        context=context).consistent
