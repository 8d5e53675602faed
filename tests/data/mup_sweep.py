"""Learning-rate transfer (tests/test_mup.py): widths 64 and 256 on the quickstart's smoke
corpus, one block of heads of 16 dims, tuned by `tinyscale sweep tune-lr` (5 rates a
factor 2 apart from 1.25e-3, 60 steps of 8 x 32 tokens, packed per width: the fewest
of 40, 60, 100 and 150 steps that left both widths' best rate inside the grid).

    tinyscale sweep tune-lr tests/data/mup_sweep.py:mup --sweep-dir /tmp/transfer-mup
    tinyscale sweep tune-lr tests/data/mup_sweep.py:standard --sweep-dir /tmp/transfer-sp

':mup' is model.parametrization=mup (base width 64), ':standard' the same without.
"""

import importlib.util
import os

from tinyscale.config.file import variant

_spec = importlib.util.spec_from_file_location(
    "quickstart", os.path.join(os.path.dirname(__file__), "..", "..", "sweeps", "quickstart.py"))
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)

WIDTHS = (64, 256)


def get_config(arg: str = "mup"):
    arg = variant(arg, "mup", "standard") or "mup"
    c = quickstart.get_config("smoke")
    c.data.cache_dir = os.environ.get("TINYSCALE_TEST_CACHE", c.data.cache_dir)
    c.model.update(parametrization=arg, mup_base_width=64, n_layers=1, max_seq_len=32)
    c.train.update(seq_len=32, batch_size=8, warmup_steps=10, log_every=50)
    c.eval.update(batches=8)
    c.tune.update(lrs=5, lr_min=1.25e-3, lr_max=2e-2, steps=60)
    c.output.update(progress=False, peak_flops=1e11)  # no peak measured in each packed process
    return c


def sweep(arg: str = "mup"):
    return [{"model.d_model": w, "model.n_heads": w // 16} for w in WIDTHS]
