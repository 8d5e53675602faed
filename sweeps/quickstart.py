"""Quickstart: small models on the built-in SynthStories corpus, on a 2-core CPU.

    tinyscale train --config sweeps/quickstart.py --workdir runs/quickstart    # one model, ~1 min
    tinyscale sweep plan sweeps/quickstart.py                                  # the grid
    tinyscale sweep run sweeps/quickstart.py --sweep-dir runs/quickstart-sweep # 12 runs
    tinyscale train --config sweeps/quickstart.py:smoke --workdir /tmp/smoke   # seconds (tests)

The sweep spans widths 16..128 at depths 1 and 2: from models that cannot write a
grammatical sentence to models that mostly can. It uses a third of the SynthStories
lexicon so that it finishes in minutes.
"""

from tinyscale.config import get_config as default_config
from tinyscale.config_file import variant
from tinyscale.launch.plan import product

WIDTHS = (16, 32, 48, 64, 96, 128)
DEPTHS = (1, 2)


def get_config(arg: str = ""):
    arg = variant(arg, "smoke")
    c = default_config()
    c.data.update(synth_richness=0.35, train_stories=20_000)
    c.model.update(family="llama", d_model=64, n_layers=2, n_heads=4, max_seq_len=256)
    c.train.update(seq_len=256, batch_size=8, tokens=1_000_000, lr=3e-3, warmup_steps=30,
                   log_every=10, checkpoint_every=100)
    c.eval.update(every=100, batches=4, prompts=48, fluency_prompts=8, max_new_tokens=160)
    # two runs at once, each on half the cores: small models cannot use two cores (the
    # README has the times; losses agree to ~1e-4, bitwise equality needs the same cores)
    c.launch.parallel = 2
    if arg == "smoke":  # for tests: a tiny corpus and a few steps
        c.data.update(train_stories=1500, eval_stories=100, vocab_size=512)
        c.model.update(d_model=32, n_layers=1, n_heads=2, max_seq_len=64)
        c.train.update(seq_len=64, batch_size=8, steps=30, warmup_steps=5,
                       log_every=5, checkpoint_every=10)
        c.eval.update(every=10, batches=2, prompts=8, max_new_tokens=48, fluency=False)
        c.launch.parallel = 1
    return c


def sweep(arg: str = ""):
    if arg == "smoke":
        return product({"model.d_model": [16, 32], "model.n_layers": [1], "model.n_heads": [2]})
    runs = product({"model.d_model": list(WIDTHS), "model.n_layers": list(DEPTHS)})
    return [{**r, "model.n_heads": max(1, r["model.d_model"] // 16)} for r in runs]
