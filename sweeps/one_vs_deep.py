"""One wide block against deeper, narrower stacks at matched parameter counts.

    tinyscale sweep plan sweeps/one_vs_deep.py
    tinyscale sweep run sweeps/one_vs_deep.py --sweep-dir runs/one-vs-deep
    tinyscale analyze runs/one-vs-deep

For each target of non-embedding parameters, depths 1, 2 and 4 with the width that
comes closest to the target (SynthStories, quickstart training settings and its
learning rate by width: 2M tokens each, whatever the size), each shape with three seeds,
so that the report's differences and intervals hold the seed-to-seed spread (`sweep plan`
shows the 27 runs). docs/results.md has what it found, how long it took, and how.
"""

import importlib.util
import os

from tinyscale.launch.plan import width_for_parameters, with_seeds

_spec = importlib.util.spec_from_file_location(
    "quickstart", os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.py"))
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)

TARGETS = (25_000, 100_000, 400_000)  # non-embedding parameters
DEPTHS = (1, 2, 4)
SEEDS = (0, 1, 2)


def get_config(arg: str = ""):
    return quickstart.get_config(arg)


def sweep(arg: str = ""):
    base = get_config(arg)
    shapes = []
    for target in TARGETS:
        for depth in DEPTHS:
            width = width_for_parameters(target, base, depth, head_size=16)
            shapes.append({"model.d_model": width, "model.n_layers": depth,
                           "model.n_heads": max(1, width // 16),
                           **quickstart.learning_rate(width)})
    return with_seeds(shapes, list(SEEDS))
