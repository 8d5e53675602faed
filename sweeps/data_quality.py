"""Data quality as a sweep dimension (Phi's idea): noisy corpora, filtered and not.

    tinyscale sweep plan sweeps/data_quality.py
    tinyscale sweep run sweeps/data_quality.py --sweep-dir runs/data_quality   # ~35 min here
    tinyscale analyze runs/data_quality                                        # 'By data'

The quickstart's corpus and settings at widths 16, 32, 48 and 64 (depth 2: about 36K to
170K parameters, around the quickstart's emergence points -- grammar at 40K, coherence
at 118K), two seeds each, under six data settings:

* `data.noise` 0, 0.25 and 0.5: that share of the 20,000 training stories replaced by
  corrupted ones (every corruption of synthstories/corrupt.py, one per story: shuffled
  or random words, truncated sentences, wrong pronouns, renamed characters, swapped
  objects -- each applied wherever it can be in the story);
* with the grammar filter off, and on keeping the best half (`data.filter_keep` 0.5:
  10,000 stories, the same count whatever the noise, more than the runs' token budgets).

The report's "By data" section gives each setting's emergence points and, against the
plain corpus, the ratio of parameters each setting needs. The README has what it found.
"""

import importlib.util
import os

from tinyscale.config.file import variant
from tinyscale.launch.plan import with_seeds

_spec = importlib.util.spec_from_file_location(
    "quickstart", os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.py"))
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)

WIDTHS = (16, 32, 48, 64)
TOKENS = {16: 500_000, 32: 1_000_000, 48: 1_250_000, 64: 1_500_000}
NOISE = (0.0, 0.25, 0.5)
SEEDS = (0, 1)


def settings() -> list[dict]:
    return [{"data.noise": noise, **({"data.filter": "grammar", "data.filter_keep": 0.5}
                                     if filtered else {})}
            for noise in NOISE for filtered in (False, True)]


def get_config(arg: str = ""):
    arg = variant(arg, "smoke")
    c = quickstart.get_config(arg)
    c.eval.update(prompts=32)
    return c


def sweep(arg: str = ""):
    if arg == "smoke":
        return [{"model.d_model": 16, "model.n_layers": 1, "model.n_heads": 1, **s}
                for s in settings()[:4]]
    runs = []
    for width in WIDTHS:
        shape = {"model.d_model": width, "model.n_layers": 2, "model.n_heads": width // 16,
                 "train.tokens": TOKENS[width]}
        runs += [{**shape, **s} for s in settings()]
    return with_seeds(runs, list(SEEDS))
