"""One tiny run on a TinyStories-layout folder of real English (tests/test_english.py):
the developer-written stories, in the Hugging Face files' format, read from the manual
dir in $TINYSCALE_TEST_MANUAL; every real-English metric on, at toy sizes."""

import os

from tinyscale.config import get_config as default_config


def get_config(arg: str = ""):
    c = default_config()
    c.data.update(dataset="tinystories", manual_dir=os.environ["TINYSCALE_TEST_MANUAL"],
                  cache_dir=os.environ["TINYSCALE_TEST_CACHE"], vocab_size=384)
    c.model.update(family="llama", d_model=32, n_layers=1, n_heads=2, max_seq_len=128)
    c.train.update(seq_len=128, batch_size=8, steps=40, warmup_steps=5, lr=3e-3,
                   log_every=10, checkpoint_every=20)
    c.eval.update(every=20, batches=2, prompts=8, max_new_tokens=48, fluency=True,
                  fluency_prompts=8)
    c.output.peak_flops = 1e11  # MFU's denominator given: no peak measured in a fresh cache
    return c


def sweep(arg: str = ""):
    return [{"model.d_model": 32}]  # the reference LM's 135M parameters cost the time
