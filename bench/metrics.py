"""Do the coherence metrics measure what they claim? One table of evidence.

    python bench/metrics.py

SynthStories: true continuations of held-out prompts against each corruption of them
(tests/controls.py). Real English: the 240 shipped sentences of Python's docstrings and
Debian package descriptions (tests/data/english_sentences.txt) against their
word-shuffled versions, scored by Link Grammar and by the reference LM (AUC: 1 = perfect
separation).
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.controls import CONTROLS, auc, english_sentences, shuffle  # noqa: E402
from tinyscale.evals import MissingOptional  # noqa: E402
from tinyscale.evals.coherence import METRICS, synth_scores  # noqa: E402
from tinyscale.evals.prompts import synth_prompts  # noqa: E402


def main():
    prompt_set = synth_prompts(200, seed=7)
    rows = {"true continuation": [synth_scores(p.text, p.reference, True) for p in prompt_set]}
    for name, control in CONTROLS.items():
        rng = random.Random(name)
        rows[name] = [synth_scores(p.text, *control(p.text, p.reference, rng))
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
        from tinyscale.evals.reference_lm import ReferenceLM
        lm = ReferenceLM()
        a, b = lm.mean_logp(real), lm.mean_logp(shuffled)
        print(f"{'reference LM, mean log p':<30} real {a.mean():.3f}  shuffled {b.mean():.3f}  "
              f"AUC {auc(a, b):.3f}")
    except MissingOptional as missing:
        print(f"skipped: {missing}")


if __name__ == "__main__":
    main()
