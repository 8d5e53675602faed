"""Quickstart: small models on the built-in SynthStories corpus, on a 2-core CPU.

    tinyscale train --config sweeps/quickstart.py --workdir runs/quickstart    # d64-L2, ~1 min
    tinyscale sweep plan sweeps/quickstart.py                                  # the grid
    tinyscale sweep run sweeps/quickstart.py --sweep-dir runs/quickstart-sweep # 8 runs
    tinyscale train --config sweeps/quickstart.py:smoke --workdir /tmp/smoke   # seconds (tests)

The sweep spans widths 16..96 at depth 2, two seeds each, sized to finish on a 2-core
CPU within the README's 15 minutes. It holds the stages of coherence in order: grammar
(d16 cannot write a grammatical sentence, d32 mostly can), coherence, and the start of
consistency above chance -- copying the prompt's objects and names, a transition that
comes after 1-3M tokens at d64-d96 and is seed-dependent at d64 (one seed of two copies
at 2M tokens; the other did not at 3M either: above chance 0.14 at 2M, 0.11 at 3M), so
the midpoint is crossed between d64 and d96 (the README has the numbers). Token
budgets grow with width (the small models are long done learning what they can), and
the widest model takes a lower learning rate (at 1e-2 a d96 model stayed at loss 1.24
after 1.5M tokens; at 5e-3 it reached 1.08 at 2M). d96 gets 3M tokens, paid for by the
fused cross-entropy's faster step (at 2M one d96 seed of two copied, 0.31 and 0.65;
seed 0 at 3M: 0.68). The sweep uses a third of the SynthStories lexicon. Depth is the
subject of one_vs_deep.py.
"""

from tinyscale.config import get_config as default_config
from tinyscale.config.file import variant
from tinyscale.launch.plan import product, with_seeds

WIDTHS = (16, 32, 64, 96)
TOKENS = {16: 500_000, 32: 1_000_000, 64: 2_000_000, 96: 3_000_000}  # by width
WIDE = 96  # from this width on, the learning rate is halved (see above)
SEEDS = (0, 1)


def get_config(arg: str = ""):
    arg = variant(arg, "smoke")
    c = default_config()
    c.data.update(synth_richness=0.35, train_stories=20_000)
    c.model.update(family="llama", d_model=64, n_layers=2, n_heads=4, max_seq_len=256)
    c.train.update(seq_len=256, batch_size=8, tokens=2_000_000, lr=1e-2, warmup_steps=30,
                   log_every=10, checkpoint_every=100)
    # fluency (the reference LM's view) is for real English; on SynthStories the corpus
    # grammar and the validator measure the same things exactly, and 20 s a run are saved
    c.eval.update(every=100, batches=4, prompts=48, fluency=False, max_new_tokens=160)
    # two runs at once, each on half the cores: small models cannot use two cores (the
    # README has the times; losses agree to ~1e-4, bitwise equality needs the same cores)
    c.launch.parallel = 2
    if arg == "smoke":  # for tests: a tiny corpus and a few steps
        c.data.update(train_stories=1500, eval_stories=100, vocab_size=512)
        c.model.update(d_model=32, n_layers=1, n_heads=2, max_seq_len=64)
        c.train.update(seq_len=64, batch_size=8, steps=30, warmup_steps=5, lr=3e-3,
                       log_every=5, checkpoint_every=10)
        c.eval.update(every=10, batches=2, prompts=8, max_new_tokens=48, fluency=False)
        c.launch.parallel = 1
    return c


def learning_rate(width: int) -> dict:
    """The override of train.lr for a shape of this width ({} for the default)."""
    return {"train.lr": 5e-3} if width >= WIDE else {}


def sweep(arg: str = ""):
    if arg == "smoke":
        return product({"model.d_model": [16, 32], "model.n_layers": [1], "model.n_heads": [2]})
    shapes = []
    for width in WIDTHS:
        shape = {"model.d_model": width, "model.n_layers": 2, "model.n_heads": width // 16,
                 "train.tokens": TOKENS[width]}
        shapes.append({**shape, **learning_rate(width)})
    return with_seeds(shapes, list(SEEDS))
