"""Architecture as a sweep dimension, around the quickstart's emergence point (2-core CPU).

    tinyscale sweep plan sweeps/architectures.py                                # total and active
    tinyscale sweep run sweeps/architectures.py --sweep-dir runs/architectures  # ~35 min here
    tinyscale analyze runs/architectures                                        # 'By architecture'

Widths 32, 48 and 64 at depth 2 (about 60K-170K parameters: the quickstart's coherence
emerged near 118K), two seeds each, the quickstart's corpus and learning rate, in five
architectures:

* `dense`: the quickstart's llama;
* `moe-active`: Mixtral's experts, 4 experts top-1 of the dense model's MLP width -- the
  same parameters active per token, 4x the MLP parameters in total;
* `moe-total`: 4 experts top-1 of a quarter of that width -- about the same total
  parameters as dense, a quarter of the MLP active;
* `parallel`: the parallel block (GPT-J / Phi-2);
* `window`: Mistral's sliding window, every layer local with 64 of the 256 positions.

The report's "By architecture" section puts their emergence points side by side, by
active and by total parameters. The README has what it found.
"""

import importlib.util
import os

from tinyscale.config.file import variant
from tinyscale.launch.plan import with_seeds

_spec = importlib.util.spec_from_file_location(
    "quickstart", os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.py"))
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)

WIDTHS = (32, 48, 64)
TOKENS = {32: 1_000_000, 48: 1_250_000, 64: 1_500_000}
SEEDS = (0, 1)


def llama_d_ff(width: int) -> int:
    """The dense llama MLP width (tinyscale/model/layers.py: 8/3 d, up to a multiple of 32)."""
    return 32 * -(-int(8 * width / 3) // 32)


def architectures(width: int) -> dict[str, dict]:
    return {
        "dense": {},
        "moe-active": {"model.n_experts": 4, "model.experts_per_token": 1},
        "moe-total": {"model.n_experts": 4, "model.experts_per_token": 1,
                      "model.d_ff": llama_d_ff(width) // 4},
        "parallel": {"model.parallel_block": True},
        "window": {"model.attention_pattern": "local", "model.window_size": 64},
    }


def get_config(arg: str = ""):
    arg = variant(arg, "smoke")
    c = quickstart.get_config(arg)
    c.eval.update(prompts=32)
    return c


def sweep(arg: str = ""):
    widths = (16, 24) if arg == "smoke" else WIDTHS
    runs = []
    for width in widths:
        shape = {"model.d_model": width, "model.n_layers": 2 if arg != "smoke" else 1,
                 "model.n_heads": max(1, width // 16)}
        if arg != "smoke":
            shape["train.tokens"] = TOKENS[width]
        runs += [{**shape, **knobs} for knobs in architectures(width).values()]
    return with_seeds(runs, list(SEEDS))
