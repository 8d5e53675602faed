"""The reference LM's scoring speed on the developer-written stories.

    python bench/reference_lm.py

Times `ReferenceLM.mean_logp` (each call warmed up once, so compiling is not counted) on
two workloads: 80 sentences alone (short rows: the AUC test's and the data filter's
case) and 32 story continuations after their prompts, in the windows eval reads
(tinyscale/evals/scoring.py: CONTEXT_CHARS, TEXT_CHARS). Reports seconds and tokens/s.
"""

from __future__ import annotations

import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests.controls import english_sentences, english_stories  # noqa: E402
from tinyscale import process  # noqa: E402
from tinyscale.evals.prompts import cut_text  # noqa: E402
from tinyscale.evals.scoring import CONTEXT_CHARS, TEXT_CHARS  # noqa: E402
from tinyscale.model.reference_lm import ReferenceLM  # noqa: E402


def timed(lm, texts, contexts=None) -> str:
    lm.mean_logp(texts, contexts)  # compiles this call's shapes
    start = time.perf_counter()
    lm.mean_logp(texts, contexts)
    seconds = time.perf_counter() - start
    tokens = sum(len(lm.tokenizer.encode(t).ids) + 1 for t in texts) + sum(
        len(lm.tokenizer.encode(c).ids) for c in contexts or [])
    return f"{seconds:.2f} s, {tokens / seconds:,.0f} tokens/s ({tokens:,} tokens)"


def main():
    process.for_compute()  # as the command does
    lm = ReferenceLM()
    print("80 sentences:", timed(lm, english_sentences()[:80]))
    stories = english_stories(files=("stories_a.txt",))[:32]
    pairs = [cut_text(s, random.Random(s)) for s in stories]
    print("32 continuations after their prompts:",
          timed(lm, [r[:TEXT_CHARS] for _, r in pairs], [p[-CONTEXT_CHARS:] for p, _ in pairs]))


if __name__ == "__main__":
    main()
