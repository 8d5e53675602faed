"""Data benchmark: SynthStories generation and validation, tokenisation, batch serving.

    python bench/data.py

Prints one table. Batch serving should be far faster than any model consumes tokens
(the goal is 10M tokens/s from the prepared array on a 2-core machine).
"""

from __future__ import annotations

import os
import tempfile
import time

from tinyscale import config as config_lib
from tinyscale.data import pipeline, tokenizer
from tinyscale.data.synthstories import stories
from tinyscale.data.synthstories.text import split_sentences, tokenize
from tinyscale.data.synthstories.validate import validate


def timed(fn, min_seconds=1.0):
    """(result of the last call, seconds per call), repeating until min_seconds."""
    calls, start = 0, time.perf_counter()
    while True:
        result = fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return result, elapsed / calls


def main():
    rows = []
    texts, dt = timed(lambda: [s.text for s in stories(500, seed=1)])
    mb = sum(len(t.encode()) for t in texts) / 1e6
    rows.append(("SynthStories generation", mb / dt, "MB/s"))
    n_sentences = sum(len(split_sentences(tokenize(t))) for t in texts)
    _, dt = timed(lambda: [validate(t) for t in texts[:200]])
    rows.append(("SynthStories validation", n_sentences * 200 / 500 / dt, "sentences/s"))

    with tempfile.TemporaryDirectory() as tmp:
        c = config_lib.get_config()
        c.data.cache_dir, c.data.train_stories, c.data.eval_stories = tmp, 5000, 200
        data_dir = pipeline.prepare(c, progress=False)
        sp = tokenizer.load(os.path.join(data_dir, "tokenizer.model"))
        big = texts * 4
        _, dt = timed(lambda: list(tokenizer.encode_batches(sp, big)))
        rows.append(("tokenisation (sentencepiece, 1024 BPE)", 4 * mb / dt, "MB/s"))
        for seq_len, batch in ((256, 8), (256, 32), (512, 64)):
            batches = pipeline.Batches(data_dir, "train", seq_len, batch, seed=0)
            step = iter(range(10**9))
            _, dt = timed(lambda b=batches, s=step: b.batch(next(s)))
            rows.append((f"batch serving (batch {batch} x {seq_len})",
                         batch * seq_len / dt / 1e6, "M tokens/s"))

    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'rate':>10}  unit")
    for name, rate, unit in rows:
        print(f"{name:<{width}}  {rate:>10,.1f}  {unit}")


if __name__ == "__main__":
    main()
