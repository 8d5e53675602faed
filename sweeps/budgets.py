"""Token budgets by branching: L(N, D) from one wsd run per size, on a 2-core CPU.

    tinyscale sweep run sweeps/budgets.py --sweep-dir runs/budgets   # about 30 min here
    tinyscale analyze runs/budgets                                   # the L(N, D) section

Five widths (16..96, depth 2, the quickstart's corpus and learning rates) x two seeds.
Each run trains 2M tokens on a warmup-stable-decay schedule and forks cool-downs at 250K,
500K and 1M tokens (tinyscale/train/branches.py), so every size gives four (N, D) points for
the price of 2M + 20% of the three smaller budgets. The report fits
L(N, D) = E + A/N^alpha + B/D^beta to all 40 points, draws the IsoFLOP curves and the
compute-optimal frontier, and counts the FLOPs branching saved against training every
budget from scratch. The README has what it found.
"""

import importlib.util
import os

from tinyscale.config.file import variant
from tinyscale.launch.plan import product, with_seeds

_spec = importlib.util.spec_from_file_location(
    "quickstart", os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.py"))
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)

WIDTHS = (16, 32, 48, 64, 96)
TOKENS = 2_000_000
BRANCHES = (250_000, 500_000, 1_000_000)
SEEDS = (0, 1)


def get_config(arg: str = ""):
    arg = variant(arg, "smoke")
    c = quickstart.get_config(arg)
    c.train.update(schedule="wsd", decay_fraction=0.2, tokens=TOKENS, branches=BRANCHES)
    c.eval.update(prompts=32)  # four evaluations per run: the fit needs only the loss
    if arg == "smoke":  # for tests: 30 steps of 512 tokens, branches at 10 and 20 steps
        c.train.update(steps=30, branches=(5120, 10240))
    return c


def sweep(arg: str = ""):
    if arg == "smoke":
        return product({"model.d_model": [16, 24, 32], "model.n_layers": [1],
                        "model.n_heads": [2]})
    shapes = [{"model.d_model": w, "model.n_layers": 2, "model.n_heads": w // 16,
               **quickstart.learning_rate(w)} for w in WIDTHS]
    return with_seeds(shapes, list(SEEDS))
