"""A study that runs in about an hour on a 2-core CPU: widths x depths x 2 seeds.

    tinyscale sweep plan sweeps/cpu_study.py
    tinyscale sweep run sweeps/cpu_study.py --sweep-dir runs/cpu-study

The full SynthStories lexicon, 1.5M tokens per run, widths 16..128 at depths 1, 2, 4.
"""

import importlib.util
import os

from tinyscale.launch.plan import product, with_seeds

_spec = importlib.util.spec_from_file_location(
    "quickstart", os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.py"))
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)


def get_config(arg: str = ""):
    c = quickstart.get_config(arg)
    c.data.update(synth_richness=1.0, train_stories=40_000)
    c.train.update(tokens=1_500_000)
    return c


def sweep(arg: str = ""):
    runs = product({"model.d_model": [16, 32, 64, 128], "model.n_layers": [1, 2, 4]})
    runs = [{**r, "model.n_heads": max(1, r["model.d_model"] // 16)} for r in runs]
    return with_seeds(runs, [0, 1])
