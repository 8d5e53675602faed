"""Quickstart: small models on the built-in SynthStories corpus, on a 2-core CPU.

    tinyscale train --config sweeps/quickstart.py --workdir runs/quickstart    # d64-L2
    tinyscale sweep plan sweeps/quickstart.py                                  # the grid
    tinyscale sweep run sweeps/quickstart.py --sweep-dir runs/quickstart-sweep # 18 runs
    tinyscale train --config sweeps/quickstart.py:smoke --workdir /tmp/smoke   # seconds (tests)

The sweep asks where the stages of coherence emerge by parameter count N -- grammar,
coherence, and consistency above chance (using the prompt: copying its objects and
names) -- with the data held fixed: every size trains the same train.tokens (D), so the
report's emergence by N is at one D, not partly an effect of data that grows with N.
Each run is a warmup-stable-decay run that forks a cool-down at each of BRANCHES
(tinyscale/train/branches.py), so every size is also measured at those smaller budgets
for a fifth of their tokens: emergence by N at three fixed Ds, and L(N, D), in one sweep.
The widths run from one that cannot write a grammatical sentence to ones that copy the
prompt, at depth 1: at 2M tokens one block copies at fewer parameters than two or four
layers of the same size (sweeps/one_vs_deep.py), so the last stage fits in the budget.
Three seeds per width, since the copying transition is seed-dependent near its
midpoint. From WIDE on the learning rate is halved (wider models diverged or stalled at
1e-2). The whole sweep is sized to finish within the README's 15 minutes on 2 cores;
docs/results.md has what it measured, how long it took, and the earlier designs.
"""

from tinyscale.config import get_config as default_config
from tinyscale.config.file import variant
from tinyscale.launch.plan import product, with_seeds

WIDTHS = (8, 16, 32, 64, 96, 128)
BRANCHES = (500_000, 1_000_000)  # cool-downs forked from each run's stable phase: more Ds
WIDE = 96  # from this width on, the learning rate is halved (see above)
SEEDS = (0, 1, 2)


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
                       log_every=5, checkpoint_every=10, quick_compile=True)
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
    for width in WIDTHS:  # every size on the base config's train.tokens: one D for all
        shape = {"model.d_model": width, "model.n_layers": 1,
                 "model.n_heads": max(1, width // 16), **learning_rate(width),
                 "train.schedule": "wsd", "train.branches": list(BRANCHES)}
        shapes.append(shape)
    return with_seeds(shapes, list(SEEDS))
