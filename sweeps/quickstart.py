"""Quickstart: a small model on the built-in SynthStories corpus, about a minute on CPU.

    tinyscale train --config sweeps/quickstart.py --workdir runs/quickstart
    tinyscale train --config sweeps/quickstart.py:smoke --workdir /tmp/smoke   # seconds
"""

from tinyscale.config import get_config as default_config


def get_config(arg: str = ""):
    c = default_config()
    c.model.update(family="llama", d_model=64, n_layers=2, n_heads=4, max_seq_len=256)
    c.train.update(seq_len=256, batch_size=8, tokens=500_000, lr=3e-3, warmup_steps=30,
                   log_every=10, checkpoint_every=100)
    c.eval.update(every=100, batches=4)
    if arg == "smoke":  # for tests: a tiny corpus and a few steps
        c.data.update(train_stories=1500, eval_stories=100, vocab_size=512)
        c.model.update(d_model=32, n_layers=1, n_heads=2, max_seq_len=64)
        c.train.update(seq_len=64, batch_size=8, steps=30, warmup_steps=5,
                       log_every=5, checkpoint_every=10)
        c.eval.update(every=10, batches=2, prompts=8, max_new_tokens=48, fluency=False)
    elif arg:
        raise ValueError(f"unknown variant {arg!r}: use '' or 'smoke'")
    return c
