"""Data quality (tinyscale/data/quality.py): noise put into the training split, and the
filters that find it -- the corpus grammar on SynthStories, the reference LM on English."""

import hashlib
import json
import os

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli
from tests.test_tinystories import write_files
from tinyscale.config import PLAIN_TEXT_KINDS, SYNTH_NOISE_KINDS
from tinyscale.data import pipeline
from tinyscale.data.synthstories.corrupt import CORRUPTIONS
from tinyscale.data.synthstories.validate import validate


def prepare(tmp_path, name, *extra):
    result = run_cli("data", "prepare", "--data-dir", str(tmp_path / name),
                     "--config.data.train_stories=2000", "--config.data.eval_stories=100",
                     f"--config.data.cache_dir={tmp_path / 'cache'}", *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / name / "meta.json") as f:
        return json.load(f), result.stderr


def stories(data_dir, split="train"):
    sp = pipeline.load_tokenizer(str(data_dir))
    stream = np.asarray(pipeline.tokens(str(data_dir), split))
    ends = np.flatnonzero(stream == 2)
    return [sp.decode(stream[a:b].tolist())
            for a, b in zip(np.concatenate([[0], ends[:-1] + 1]), ends)]


def md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def test_grammar_filter_recovers_the_corrupted_synthstories(tmp_path):
    noisy = ("--config.data.noise=0.25",)
    meta, err = prepare(tmp_path, "filtered", *noisy, "--config.data.filter=grammar")
    noise, filt = meta["noise"], meta["filter"]
    assert noise["corrupted"] == 500 and noise["stories"] == 2000
    assert all(v > 50 for v in noise["by_kind"].values()), noise  # every kind drawn
    assert filt["kept"] == 1500 and "scored 2,000 stories" in err
    assert filt["precision"] >= 0.95 and filt["recall"] >= 0.95, filt
    saved = np.load(tmp_path / "filtered" / "filter.npz")
    assert saved["kept"].sum() == 1500 and saved["corrupted"].sum() == 500
    assert (saved["scores"][saved["kept"]].min() >= saved["scores"][~saved["kept"]].max())
    kept = stories(tmp_path / "filtered")
    assert len(kept) == 1500 and sum(validate(s).valid for s in kept) >= 0.95 * 1500

    # noise alone: the same corrupted stories, nothing removed; the eval split and the
    # tokenizer are the clean corpus's, whatever the noise and filter
    meta_noisy, _ = prepare(tmp_path, "noisy", *noisy)
    meta_clean, _ = prepare(tmp_path, "clean")
    assert "filter" not in meta_noisy and meta_noisy["noise"] == noise
    assert "noise" not in meta_clean
    assert meta_noisy["splits"]["train"]["stories"] == 2000
    train = stories(tmp_path / "noisy")
    assert sum(not validate(s).valid for s in train) >= 0.95 * 500
    assert set(kept) <= set(train)
    for name in ("eval.bin", "tokenizer.model"):
        assert md5(tmp_path / "noisy" / name) == md5(tmp_path / "clean" / name) == \
            md5(tmp_path / "filtered" / name), name
    assert md5(tmp_path / "noisy" / "train.bin") != md5(tmp_path / "clean" / "train.bin")

    # another share kept reuses the cached scores; a stricter filter is as precise
    meta_half, err = prepare(tmp_path, "half", *noisy, "--config.data.filter=grammar",
                             "--config.data.filter_keep=0.5")
    assert "scored" not in err and meta_half["filter"]["kept"] == 1000
    assert meta_half["filter"]["recall"] == 1.0
    assert meta_half["filter"]["score_seconds"] == filt["score_seconds"]  # the cached cost


@pytest.mark.slow
def test_reference_lm_filter_on_tinystories_files(tmp_path, reference_lm_cache):
    """English stories in the TinyStories files' layout, a quarter with shuffled or
    random words: the reference LM's likelihood finds them."""
    with open(os.path.join(ROOT, "tests", "data", "english_sentences.txt")) as f:
        sentences = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    texts = [" ".join(sentences[i:i + 5]) for i in range(0, len(sentences) - 4, 5)]
    write_files(tmp_path / "manual", "original",
                "".join(f"{t}\n<|endoftext|>\n" for t in texts))
    result = run_cli("data", "prepare", "--dataset", "tinystories",
                     "--manual-dir", str(tmp_path / "manual"), "--data-dir",
                     str(tmp_path / "data"), "--config.data.vocab_size=256",
                     "--config.data.noise=0.25",
                     "--config.data.noise_kinds=shuffled_words,random_words",
                     "--config.data.filter=reference_lm",
                     f"--config.data.cache_dir={reference_lm_cache(tmp_path / 'cache')}")
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.load(open(tmp_path / "data" / "meta.json"))
    assert meta["noise"]["corrupted"] == round(0.25 * len(texts))
    filt = meta["filter"]
    print(filt)
    assert filt["precision"] >= 0.9 and filt["recall"] >= 0.9, filt
    assert filt["stories_per_s"] > 0 and "reference-LM filter" in result.stderr
    show = run_cli("data", "show", "--data-dir", str(tmp_path / "data"))
    assert "filter reference_lm: kept 36 of 48" in show.stdout, show.stdout


def test_the_declared_noise_kinds_are_the_corruptions():
    """config declares data.noise_kinds' domain (so that validating a config imports no
    data code); it must name exactly SynthStories' corruptions, and the plain-text ones
    must be among them."""
    assert SYNTH_NOISE_KINDS == tuple(CORRUPTIONS)
    assert set(PLAIN_TEXT_KINDS) <= set(CORRUPTIONS)
