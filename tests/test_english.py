"""Real English end to end: a TinyStories-layout folder of the developer-written stories
(the Hugging Face files' format: `<|endoftext|>` lines, Windows line ends, a few stories
with mojibake) goes through prepare -> train -> eval -> analyze, and every real-English
metric lands in eval.json with its standard error."""

import json
import os

import pytest

from tests.conftest import ROOT, run_cli
from tests.controls import english_stories
from tests.test_malformed import md5s

SWEEP = os.path.join(ROOT, "tests", "data", "english_sweep.py")
CURLY = str.maketrans({"'": "\u2019"})


def mojibake(story: str) -> str:
    """The story as the real files carry some: curly quotes and apostrophes, written as
    UTF-8 and read as cp1252 once, the right double quote's undefined 0x9D byte lost."""
    quoted = story.translate(CURLY)
    parts = quoted.split('"')
    quoted = "".join(p + ("\u201c" if i % 2 == 0 else "\u201d") if i < len(parts) - 1 else p
                     for i, p in enumerate(parts))
    return quoted.encode("utf-8").decode("cp1252", errors="ignore")


def write_folder(folder, train, valid):
    os.makedirs(folder, exist_ok=True)
    for name, stories in (("TinyStories-train.txt", train), ("TinyStories-valid.txt", valid)):
        text = "".join(s.replace("\n", "\r\n") + "\r\n<|endoftext|>\r\n" for s in stories)
        with open(os.path.join(folder, name), "w", encoding="utf-8", newline="") as f:
            f.write(text)


def test_mojibake_fixture_is_real_mojibake():
    story = 'Ben said, "Let\'s go!" It\'s fun.'
    broken = mojibake(story)
    assert "\u00e2\u20ac\u2122" in broken and "\u00e2\u20ac" in broken  # â€™ and a bare â€
    from tinyscale.data.tinystories import clean
    assert clean(broken) == story


@pytest.mark.slow
def test_real_english_through_prepare_train_eval_analyze(tmp_path, reference_lm_cache):
    # the first two files: the data this test was sized on (more are for tuning)
    train = english_stories(files=("stories_a.txt", "stories_b.txt"))
    valid = english_stories(heldout=True)
    broken = {i for i in range(0, len(valid), 7)}  # every 7th validation story
    manual = tmp_path / "manual"
    write_folder(manual, train, [mojibake(s) if i in broken else s
                                 for i, s in enumerate(valid)])
    env = {"TINYSCALE_TEST_MANUAL": str(manual),
           "TINYSCALE_TEST_CACHE": reference_lm_cache(tmp_path / "cache")}
    sweep = tmp_path / "sweep"
    result = run_cli("sweep", "run", SWEEP, "--sweep-dir", str(sweep), env=env, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    keys = ("grammar", "consistency", "consistency_entity", "context_use", "completion",
            "coherence", "words", "ended", "truncated", "looping", "distinct_1",
            "distinct_2", "distinct_3", "novelty", "mauve", "fluency")
    stored = (sweep / "prompts.jsonl").read_text().splitlines()
    assert len(stored) == 8  # the sweep's prompts, kept for every run and eval --hf model
    for run in sorted((sweep / "runs").iterdir()):
        result = json.loads((run / "eval.json").read_text())
        for key in keys:
            assert key in result and f"{key}_se" in result, (run.name, key)
        for key in ("consistency", "consistency_entity", "context_use"):
            assert f"{key}_chance" in result and f"{key}_above_chance" in result, key
        samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == 8
        for s, line in zip(samples, stored, strict=True):
            assert s["prompt"] == json.loads(line)["prompt"]
            # cut on its own characters: the story, byte for byte, mended
            assert s["prompt"] + s["reference"] in valid, s["prompt"][:80]
    runs = md5s(sweep / "runs")
    report = run_cli("analyze", str(sweep), "--bootstrap", "0")
    assert report.returncode == 0, report.stderr[-2000:]
    assert md5s(sweep / "runs") == runs  # the report goes beside the runs, changing none
    page = (sweep / "report.html").read_text()
    assert "How the models write" in page and "ended (EOS)" in page
