"""Instruction following: SynthStories-Instruct, the `instruction` metric, and the
TinyStories-Instruct files."""

import hashlib
import json
import random

import numpy as np

from tests.conftest import run_cli
from tests.test_tinystories import write_files
from tinyscale.data.synthstories import generate, instruct
from tinyscale.evals import coherence, prompts
from tinyscale.evals import run as evals


def test_the_base_corpus_is_unchanged_by_the_features():
    """The plain corpus draws exactly what it drew before instruct stories existed."""
    text = "".join(s.text for s in generate.stories(300, 0, "train", 0.35))
    assert hashlib.sha256(text.encode()).hexdigest() == \
        "c1e5a92833b352107099bbad9d103897d8382bdd53042068a48e3f6d676dae9d"


def test_instructed_stories_follow_their_own_instructions():
    stories = list(instruct.stories(300, 0, "train", 0.35))
    counts = {f: 0 for f in instruct.FEATURES}
    for s in stories:
        header, story = s.text.split("Story: ", 1)
        assert story == s.story.text
        assert all(line.split(":")[0] in ("Features", "Words", "Summary", "Random sentence")
                   for line in header.strip().splitlines())
        assert all(instruct.check(s.instructions, s.story.text).values())
        for f in s.instructions.features:
            counts[f] += 1
        parsed, raw_header, raw_story = instruct.parse(s.text)
        assert raw_story == s.story.text and raw_header == s.instructions.header()
        assert parsed.words == s.instructions.words
    assert all(n >= 30 for n in counts.values()), counts  # every feature is asked for
    # exact both ways: a story shows a feature if and only if it was asked for
    listed = [s for s in stories if s.instructions.features]
    assert len(listed) > 150
    for s in listed:
        for f in instruct.FEATURES:
            assert instruct.has_feature(s.story.text, f) == (f in s.instructions.features)


def test_instruction_metric_true_continuations_and_others():
    """True continuations follow the instructions (>= 0.95); the continuations of other
    stories, read after these prompts, mostly do not (<= 0.3)."""
    prompt_set = prompts.synth_prompts(200, seed=0, richness=0.35, instructed=True)
    assert all(p.text.startswith(p.header) and p.header.endswith("Story: ")
               for p in prompt_set)
    true = evals.score("synthstories", prompt_set, [(p.reference, True) for p in prompt_set])
    others = evals.score("synthstories", prompt_set, [
        (prompt_set[j].reference, True) for j in coherence.chance_pairs(len(prompt_set))])
    true_share = np.nanmean([r["instruction"] for r in true])
    other_share = np.nanmean([r["instruction"] for r in others])
    print(f"instruction: true {true_share:.3f}, other stories' {other_share:.3f}")
    assert true_share >= 0.95 and other_share <= 0.3
    assert np.mean([np.isnan(r["instruction"]) for r in true]) < 0.1  # most have some open
    # the other metrics read the story, not the instructions
    assert np.mean([r["grammar"] for r in true]) > 0.95
    assert np.mean([r["consistency"] for r in true]) > 0.95


def test_instruct_corpus_prepares_with_its_own_key(tmp_path):
    args = ("--config.data.train_stories=300", "--config.data.eval_stories=50",
            "--config.data.vocab_size=256", f"--config.data.cache_dir={tmp_path / 'cache'}")
    result = run_cli("data", "prepare", "--data-dir", str(tmp_path / "instruct"),
                     "--config.data.instruct=True", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Features:" in result.stdout or "Words:" in result.stdout  # its eval stories
    meta = json.loads((tmp_path / "instruct" / "meta.json").read_text())
    assert meta["data"]["instruct"] is True
    result = run_cli("data", "prepare", "--data-dir", str(tmp_path / "instruct"), *args)
    assert result.returncode == 2 and "config.data.instruct=True, not False" in result.stderr


def test_tinystories_instruct_files(tmp_path):
    """Entries in TinyStories-Instruct's layout: read by the builder, cut into prompts
    after their instructions, and the instructions checked on English."""
    entries = []
    rng = random.Random(0)
    for s in instruct.stories(40, 0, "eval", 0.35):
        i = s.instructions
        lines = [f"Features: {', '.join(i.features)}"] if i.features else []
        lines += [f"Words: {', '.join(i.words)}"] if i.words else []
        lines += [f"Random sentence: {i.sentence}"] if i.sentence else []
        rng.shuffle(lines)  # the real files vary the order
        entries.append("\n".join(lines + ["Story: ", s.story.text]))
    write_files(tmp_path / "manual", "instruct", "\n<|endoftext|>\n".join(entries) + "\n")
    result = run_cli("data", "prepare", "--dataset", "tinystories", "--manual-dir",
                     str(tmp_path / "manual"), "--data-dir", str(tmp_path / "data"),
                     "--config.data.instruct=True", "--config.data.vocab_size=256",
                     f"--config.data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "40 stories" in result.stdout and "Story:" in result.stdout
    from tinyscale.data import tinystories
    builder = tinystories.build("instruct", str(tmp_path / "tfds"), str(tmp_path / "manual"))
    prompt_set = prompts.text_prompts(tinystories.texts(builder, "validation"), 40,
                                      instructed=True)
    assert len(prompt_set) == 40
    assert all(p.header.rstrip().endswith("Story:") and "Story" not in p.story_text
               for p in prompt_set)
    true = [instruct.score(p.instructions, p.story_text, p.reference, english=True)
            for p in prompt_set]
    other = [instruct.score(p.instructions, p.story_text, prompt_set[j].reference,
                            english=True)
             for p, j in zip(prompt_set, coherence.chance_pairs(len(prompt_set)))]
    assert np.nanmean(true) >= 0.95 and np.nanmean(other) <= 0.5, (np.nanmean(true),
                                                                   np.nanmean(other))
