"""A teacher's logits (DistilBERT) and a teacher's data (Orca 2; TinyStories' own method):
students of three sizes learning from the quickstart's largest model.

    tinyscale train --config sweeps/distill.py:teacher --workdir runs/distill-teacher
    tinyscale data generate --from runs/distill-teacher --stories 10000 \
        --out runs/distill-generated
    tinyscale sweep run sweeps/distill.py --sweep-dir runs/distill     # ~20 min here
    tinyscale analyze runs/distill                                     # 'By data'

The teacher is the quickstart's largest shape (d96, depth 2, 3M tokens, learning rate
5e-3, seed 0). Students of widths 16, 32 and 48 at depth 2 (the quickstart's token
budgets), two seeds each, learn in three ways:

* `plain`: the SynthStories corpus, as in the quickstart;
* `distilled`: the same corpus, the loss half the teacher's softened logits
  (`train.distill_weight` 0.5, `train.distill_temperature` 2) and half cross-entropy;
* `generated`: 10,000 stories the teacher wrote (temperature 1, top-p 0.95, each
  from the first 8 tokens of a training story), instead of the corpus.

The teacher and the corpus are read from runs/distill-teacher and
runs/distill-generated under the directory the sweep is launched from (the commands
above), or from TINYSCALE_TEACHER and TINYSCALE_GENERATED.
"""

import importlib.util
import os

from tinyscale.config.file import variant
from tinyscale.launch.plan import with_seeds

_spec = importlib.util.spec_from_file_location(
    "quickstart", os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.py"))
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)

TEACHER_WIDTH = 96
WIDTHS = (16, 32, 48)
TOKENS = {16: 500_000, 32: 1_000_000, 48: 1_250_000}
SEEDS = (0, 1)


def paths() -> tuple[str, str]:
    """(teacher run, generated corpus), absolute: workers may start elsewhere."""
    return (os.path.abspath(os.environ.get("TINYSCALE_TEACHER", "runs/distill-teacher")),
            os.path.abspath(os.environ.get("TINYSCALE_GENERATED", "runs/distill-generated")))


def get_config(arg: str = ""):
    arg = variant(arg, "smoke", "teacher")
    c = quickstart.get_config("smoke" if arg == "smoke" else "")
    c.eval.update(prompts=32)
    if arg == "teacher":  # the quickstart's largest model
        c.model.update(d_model=TEACHER_WIDTH, n_heads=TEACHER_WIDTH // 16)
        c.train.tokens = quickstart.TOKENS[TEACHER_WIDTH]
        c.train.lr = quickstart.learning_rate(TEACHER_WIDTH)["train.lr"]
        c.eval.prompts = 64
    return c


def ways() -> dict[str, dict]:
    teacher, corpus = paths()
    return {"plain": {},
            "distilled": {"train.teacher": teacher, "train.distill_weight": 0.5,
                          "train.distill_temperature": 2.0},
            "generated": {"data.dataset": "generated", "data.dir": corpus}}


def sweep(arg: str = ""):
    runs = []
    for width in WIDTHS:
        shape = {"model.d_model": width, "model.n_layers": 2, "model.n_heads": width // 16,
                 "train.tokens": TOKENS[width]}
        runs += [{**shape, **knobs} for knobs in ways().values()]
    return with_seeds(runs, list(SEEDS))
