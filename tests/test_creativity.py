import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, small_config
from tinyscale.data import pipeline, synthstories
from tinyscale.evals import MissingOptional
from tinyscale.evals.creativity import Distinct, NgramIndex, distinct_n, ngrams, summary, words
from tinyscale.evals.mauve import cut, mauve_score, mauve_with_spread

NONSENSE = "zorblax quindle frumious vorpal snicklefritz"  # in no SynthStories story


def test_words_lower_case_and_drop_punctuation():
    assert words("Tom's dog -- 'Hi!' she said. Don’t go_away, x2 3.5") == [
        "tom's", "dog", "hi", "she", "said", "don't", "go", "away", "x2", "3", "5"]


def test_distinct_n_exact():
    texts = ["The cat sat.", "the CAT, ran!"]
    assert distinct_n(texts, 1) == 4 / 6  # the cat sat the cat ran
    assert distinct_n(texts, 2) == 3 / 4  # "the cat" twice
    assert distinct_n(texts, 3) == 1.0    # no trigram crosses from one text to the next
    assert distinct_n(["a b a b a b"], 2) == 2 / 5
    assert math.isnan(distinct_n(["one"], 2))


def test_distinct_of_a_resample_is_distinct_n_of_its_texts():
    """The bootstrap's distinct-n (each text's n-grams found once) equals distinct_n of
    the resampled texts, repeats and texts without n-grams included."""
    texts = ["The cat sat.", "the CAT, ran!", "a b a b a b", "one", "", "Tom ran. The cat sat."]
    rng = np.random.default_rng(0)
    for n in (1, 2, 3):
        distinct = Distinct(texts, n)
        for indices in [np.array([3, 4]), np.array([0, 0, 1])] + [
                rng.integers(0, len(texts), rng.integers(1, 9)) for _ in range(40)]:
            want = distinct_n([texts[i] for i in indices], n)
            got = distinct.of(indices)
            assert got == want or (math.isnan(got) and math.isnan(want)), (n, indices)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    c = small_config(str(tmp_path_factory.mktemp("creativity")))
    c.data.train_stories, c.data.eval_stories = 200, 10
    return c, pipeline.prepare(c, progress=False)


def _training_stories(c):
    return [s.text for s in synthstories.stories(c.data.train_stories, c.data.synth_seed,
                                                 "train", c.data.synth_richness)]


def test_index_holds_exactly_the_training_ngrams(tiny_data):
    c, data_dir = tiny_data
    index = NgramIndex.build(data_dir)
    # every 8-gram inside a story, none across two stories: the set matches hash for gram
    grams = {g for text in _training_stories(c) for g in ngrams(words(text), 8)}
    assert len(index.hashes) == len(grams)
    assert np.all(np.diff(index.hashes.astype(np.uint64)) > 0)  # sorted, unique


def test_novelty_exact(tiny_data):
    c, data_dir = tiny_data
    index = NgramIndex.build_or_load(data_dir, say=lambda _: None)
    stories = _training_stories(c)
    assert [index.novelty(s) for s in stories[:20]] == [0.0] * 20
    head = " ".join(words(stories[3])[:10])
    # 15 words: 8 eight-grams, the first 3 inside the training story's opening
    assert index.novelty(f"{head} {NONSENSE}") == 5 / 8
    shuffled = words(stories[5])
    random.Random(0).shuffle(shuffled)
    assert index.novelty(" ".join(shuffled)) > 0.9
    across = words(stories[0])[-4:] + words(stories[1])[:4]  # spans two stories' boundary
    assert index.novelty(" ".join(across)) == 1.0
    assert math.isnan(index.novelty("only seven words in this short text"))
    out = summary([stories[0], " ".join(shuffled), "too short"], index)
    assert out["novelty_n"] == 2 and out["copied"] == 0.5
    assert out["novelty"] == pytest.approx(index.novelty(" ".join(shuffled)) / 2)


def test_index_is_built_once_and_reused(tmp_path, monkeypatch):
    c = small_config(str(tmp_path))
    c.data.train_stories, c.data.eval_stories = 50, 5
    data_dir = pipeline.prepare(c, progress=False)
    said = []
    first = NgramIndex.build_or_load(data_dir, say=said.append)
    assert first.built and os.path.dirname(first.path) == data_dir and len(said) == 2
    assert not [n for n in os.listdir(data_dir) if ".tmp-" in n]
    stamp = os.stat(first.path).st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError("the index was built again")
    monkeypatch.setattr(NgramIndex, "build", no_build)
    second = NgramIndex.build_or_load(data_dir, say=said.append)
    assert not second.built and len(said) == 2 and os.stat(first.path).st_mtime_ns == stamp
    assert np.array_equal(second.hashes, first.hashes)
    text = _training_stories(c)[0]
    assert second.novelty(text) == 0.0 and second.novelty(f"{text} {NONSENSE}") > 0.0


def test_two_processes_build_one_index(tmp_path):
    c = small_config(str(tmp_path))
    c.data.train_stories, c.data.eval_stories = 300, 5
    data_dir = pipeline.prepare(c, progress=False)
    code = ("import sys; from tinyscale.evals.creativity import NgramIndex; "
            "print(NgramIndex.build_or_load(sys.argv[1], say=lambda _: None).built)")
    procs = [subprocess.Popen([sys.executable, "-c", code, data_dir], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and "True" in outs
    assert [n for n in os.listdir(data_dir) if n.startswith("ngrams")] == [
        os.path.basename(NgramIndex.path_for(data_dir))]  # no temporary file left
    assert np.array_equal(np.load(NgramIndex.path_for(data_dir)),
                          NgramIndex.build(data_dir).hashes)


def test_damaged_index_is_rebuilt(tmp_path):
    c = small_config(str(tmp_path))
    c.data.train_stories, c.data.eval_stories = 50, 5
    data_dir = pipeline.prepare(c, progress=False)
    path = NgramIndex.path_for(data_dir)
    with open(path, "wb") as f:
        f.write(b"not an array")
    index = NgramIndex.build_or_load(data_dir, say=lambda _: None)
    assert index.built and np.load(path).dtype == np.uint64
    assert index.novelty(_training_stories(c)[1]) == 0.0


def test_cut_keeps_whole_words():
    assert cut("The dog ran home.", 100) == "The dog ran home."
    assert cut("The dog ran home.", 9) == "The dog"    # "r" of "ran": dropped
    assert cut("The dog ran home.", 11) == "The dog ran"
    assert cut("The dog. Ran", 8) == "The dog."


def _mauve_or_skip():
    try:
        import mauve  # noqa: F401 (optional: the eval extra)
    except ImportError:
        pytest.skip("mauve-text is not installed")


def test_mauve_separates_distributions():
    _mauve_or_skip()
    rng = np.random.default_rng(0)
    same_a, same_b = rng.normal(size=(2, 100, 32))
    other = rng.normal(size=(100, 32)) + np.r_[np.full(8, 0.8), np.zeros(24)]
    same, same_se = mauve_with_spread(same_a, same_b)
    different, different_se = mauve_with_spread(same_a, other)
    assert same > 0.8 and different < 0.5 and same - different > 0.4
    assert 0.0 <= same_se < 0.1 and 0.0 <= different_se < 0.1
    assert mauve_score(same_a, same_b, seed=3) == mauve_score(same_a, same_b, seed=3)


def test_mauve_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mauve", None)  # import mauve raises ImportError
    with pytest.raises(MissingOptional, match="pip install mauve-text"):
        mauve_score(np.zeros((4, 2)), np.ones((4, 2)))


def _english_stories(name):
    path = os.path.join(ROOT, "tests", "data", "english_stories", name)
    if not os.path.exists(path):
        pytest.skip(f"{path} is missing")
    with open(path) as f:
        return [s.strip() for s in f.read().split("<|endoftext|>") if s.strip()]


# 32 true continuations against 32 others, and against 32 shuffled. Measured on these
# stories (2026-12-07; real/real, real/shuffled): 80 stories 0.971/0.093, 64 0.991/0.147,
# 48 1.0/0.32, 40 0.9/0.272 -- fewer samples lift the shuffled score; 64 keeps the gap
# near 0.85 against the 0.3 asked, at 4/5 of 80's reference-LM work.
N_MAUVE = 64


@pytest.mark.slow
def test_mauve_on_reference_lm_features():
    """True continuations of real stories against other true continuations, and against
    the same continuations word-shuffled: real English scores well above its shuffle."""
    _mauve_or_skip()
    try:
        from tinyscale.model.reference_lm import ReferenceLM
        lm = ReferenceLM()
    except MissingOptional as missing:
        pytest.skip(str(missing))
    from tinyscale.evals.prompts import cut_text
    stories = _english_stories("stories_a.txt") + _english_stories("stories_b.txt")
    if len(stories) < N_MAUVE:
        pytest.skip(f"fewer than {N_MAUVE} English stories")
    pairs = [cut_text(s, random.Random(s)) for s in stories[:N_MAUVE]]
    contexts, rests = [p[-128:] for p, _ in pairs], [cut(r, 256) for _, r in pairs]
    rng = random.Random(0)
    shuffled = [" ".join(rng.sample(r.split(), len(r.split()))) for r in rests]
    feats = lm.features(rests, contexts)
    assert feats.shape == (N_MAUVE, lm.spec.d_model) and np.isfinite(feats).all()
    alone = lm.features(rests[5:6], contexts[5:6])  # one row, no padding partners
    np.testing.assert_allclose(alone[0], feats[5], rtol=1e-4, atol=1e-4)
    half = N_MAUVE // 2
    real, _ = mauve_with_spread(feats[:half], feats[half:])
    scrambled, _ = mauve_with_spread(feats[:half], lm.features(shuffled[half:], contexts[half:]))
    print(f"\nMAUVE real/real {real:.3f}, real/shuffled {scrambled:.3f}")
    assert real > scrambled + 0.3
