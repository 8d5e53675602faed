"""Do the coherence metrics measure what they claim? Tables of evidence.

    python bench/metrics.py              # SynthStories and the Link Grammar/LM checks
    python bench/metrics.py --english    # the real-English table (developer-written stories)

SynthStories: true continuations of held-out prompts against each corruption of them
(tests/controls.py). Real English: the 240 shipped sentences of Python's docstrings and
Debian package descriptions (tests/data/english_sentences.txt) against their
word-shuffled versions, scored by Link Grammar and by the reference LM (AUC: 1 = perfect
separation).

--english: the stories in tests/data/english_stories (written for this project in
TinyStories' style, not taken from it), each cut as eval cuts a real story; the true
continuation against each corruption of it (tests/controls.english_controls), scored
with eval's own scorer. A cell is the paired win rate: the share of prompts whose true
continuation scores above its corruption (ties count half), over the n prompts whose
continuation the corruption changed.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.controls import (  # noqa: E402
    CONTROLS,
    auc,
    english_controls,
    english_sentences,
    english_stories,
    shuffle,
)
from tinyscale.evals import MissingOptional, coherence  # noqa: E402
from tinyscale.evals.coherence import METRICS, synth_scores  # noqa: E402
from tinyscale.evals.prompts import Prompt, cut_text, synth_prompts  # noqa: E402
from tinyscale.evals.scoring import (  # noqa: E402
    ReferenceScores,
    context_pairs,
    english_grammar,
    load_reference_lm,
)

# Each corruption and the metric meant to catch it (coherence must catch all of them).
MEANT = {"another story's": "consistency", "characters renamed": "consistency",
         "pronouns' gender swapped": "consistency",
         "stops after the cut sentence": "completion", "words shuffled": "grammar",
         "a sentence looped": "completion", "cut at half its length": "completion"}
ENGLISH_METRICS = ("grammar", "consistency_entity", "context_use", "consistency",
                   "completion", "coherence")


def win_rate(true, corrupted) -> float:
    true, corrupted = np.asarray(true, float), np.asarray(corrupted, float)
    return float(np.mean((true > corrupted) + 0.5 * (true == corrupted)))


SAY = functools.partial(print, flush=True)


def english_rows(stories: list[str], say=SAY) -> tuple[dict[str, list[dict]], dict]:
    """(name -> per-prompt scores of the true continuation and of each corruption,
    corruption -> the prompts whose continuation it changed)."""
    prompt_set = []
    for story in stories:
        text, rest = cut_text(story, random.Random(story))
        prompt_set.append(Prompt(text, rest))
    n = len(prompt_set)
    variants = {"true continuation": [(p.reference, True) for p in prompt_set]}
    changed: dict[str, list[int]] = {}
    for i, (story, p) in enumerate(zip(stories, prompt_set, strict=True)):
        # another story's: not the one whose prompt the LM reads as "another prompt"
        controls = english_controls(story, p.reference, prompt_set[(i + 1) % n].reference,
                                    random.Random(story))
        for name, value in controls.items():
            variants.setdefault(name, []).append(value)
            if value[0] != p.reference:
                changed.setdefault(name, []).append(i)
    grammar, linked = english_grammar(say)
    lm = load_reference_lm(os.path.expanduser("~/.cache/tinyscale"), say)
    other, _ = context_pairs(n)
    rows = {}
    for name, completions in variants.items():
        start = time.time()
        rows[name] = [coherence.english_scores(p.text, text, ended, grammar, linked,
                                               p.reference)
                      for p, (text, ended) in zip(prompt_set, completions, strict=True)]
        if lm is not None:
            scores = ReferenceScores(lm, prompt_set, completions)
            use = scores.logp([(i, i) for i in range(n)]) - scores.logp(
                [(i, other[i]) for i in range(n)])
            for row, value in zip(rows[name], use, strict=True):
                coherence.with_context(row, value if np.isfinite(value) else 0.0)
        say(f"  scored {name} ({n} prompts, {time.time() - start:.0f} s)")
    return rows, changed


def english_table(stories: list[str], say=print) -> dict[str, dict[str, float]]:
    """corruption -> metric -> paired win rate, over the prompts the corruption changed
    (a continuation with no pronoun has nothing to swap: true and "corrupted" are the
    same text, and a tie there says nothing of the metric); "n": how many."""
    rows, changed = english_rows(stories, say)
    true = rows.pop("true continuation")
    table = {}
    for name, corrupted in rows.items():
        keep = changed[name]
        table[name] = {m: win_rate([true[i][m] for i in keep], [corrupted[i][m] for i in keep])
                       for m in ENGLISH_METRICS if m in true[0]}
        table[name]["n"] = len(keep)
    return table


def print_english(stories: list[str], which: str) -> None:
    print(f"\nReal English: {len(stories)} developer-written stories ({which}), true "
          "continuation vs each corruption: paired win rate (ties half)", flush=True)
    table = english_table(stories)
    metrics = [m for m in ENGLISH_METRICS if any(m in row for row in table.values())]
    print("| corruption | n | " + " | ".join(metrics) + " |")
    print("|---|---|" + "---|" * len(metrics))
    for name, row in table.items():
        cells = [f"**{row[m]:.2f}**" if MEANT[name] == m else f"{row[m]:.2f}" for m in metrics]
        print(f"| {name} | {row['n']} | " + " | ".join(cells) + " |")
    print("(bold: the metric meant for that corruption)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--english", action="store_true",
                        help="only the real-English tables on the developer-written stories")
    parser.add_argument("--heldout-only", action="store_true",
                        help="with --english: only the held-out stories")
    args = parser.parse_args()
    if args.english:
        print_english(english_stories(heldout=True),
                      "tests/data/english_stories/heldout: written apart from every rule")
        if not args.heldout_only:
            print_english(english_stories(), "tests/data/english_stories: the entity rules "
                          "were written looking at these")
        return
    prompt_set = synth_prompts(200, seed=7)
    rows = {"true continuation": [synth_scores(p.text, p.reference, True, p.reference)
                                  for p in prompt_set]}
    for name, control in CONTROLS.items():
        rng = random.Random(name)
        rows[name] = [synth_scores(p.text, *control(p.text, p.reference, rng), p.reference)
                      for p in prompt_set]
    print(f"SynthStories, {len(prompt_set)} held-out prompts (mean ± standard error)")
    print(f"{'continuation':<18}" + "".join(f"{m:>18}" for m in METRICS))
    for name, scores in rows.items():
        cells = []
        for m in METRICS:
            v = np.array([s[m] for s in scores])
            cells.append(f"{v.mean():>10.3f} ± {v.std(ddof=1) / np.sqrt(len(v)):.3f}")
        print(f"{name:<18}" + "".join(cells))

    real = english_sentences()
    rng = random.Random(0)
    shuffled = [shuffle(s, rng) for s in real]
    print(f"\nReal English: {len(real)} docstring and Debian description sentences "
          "vs word-shuffled")
    try:
        from tinyscale.evals.linkgrammar import LinkGrammar
        lg = LinkGrammar()
        for name, fn in (("Link Grammar, no null link", lg.parses),
                         ("Link Grammar, words linked", lg.linked_share)):
            a, b = [fn(s) for s in real], [fn(s) for s in shuffled]
            print(f"{name:<30} real {np.mean(a):.3f}  shuffled {np.mean(b):.3f}  "
                  f"AUC {auc(a, b):.3f}")
    except MissingOptional as missing:
        print(f"skipped: {missing}")
    try:
        from tinyscale.model.reference_lm import ReferenceLM
        lm = ReferenceLM()
        a, b = lm.mean_logp(real), lm.mean_logp(shuffled)
        print(f"{'reference LM, mean log p':<30} real {a.mean():.3f}  shuffled {b.mean():.3f}  "
              f"AUC {auc(a, b):.3f}")
    except MissingOptional as missing:
        print(f"skipped: {missing}")


if __name__ == "__main__":
    main()
