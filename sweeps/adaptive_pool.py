"""A dense pool for the adaptive-sweep bench (bench/adaptive.py): 7 widths x 2 seeds.

    tinyscale sweep plan sweeps/adaptive_pool.py
    tinyscale sweep run sweeps/adaptive_pool.py --sweep-dir runs/adaptive-pool
    python bench/adaptive.py runs/adaptive-pool

The quickstart's config (sweeps/quickstart.py) at depth 2, with one token budget for
every width (so the emergence read by parameters is not also one by data), denser in
width than a sweep one would plan by hand: the bench replays `tinyscale sweep next`'s
choices among these trained runs and compares the FLOPs it spends with the full grid's.
"""

import importlib.util
import os

from tinyscale.launch.plan import with_seeds

_spec = importlib.util.spec_from_file_location(
    "quickstart", os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.py"))
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)

WIDTHS = (16, 24, 32, 48, 64, 96, 128)
TOKENS = 1_000_000  # every width
SEEDS = (0, 1)


def get_config(arg: str = ""):
    c = quickstart.get_config(arg)
    if arg != "smoke":
        c.train.tokens = TOKENS
        c.train.lr = 5e-3  # the quickstart's rate for its widest models, for every width
    return c


def sweep(arg: str = ""):
    if arg == "smoke":
        return quickstart.sweep("smoke")
    shapes = [{"model.d_model": w, "model.n_layers": 2, "model.n_heads": max(1, w // 16)}
              for w in WIDTHS]
    return with_seeds(shapes, list(SEEDS))
