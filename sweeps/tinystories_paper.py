"""The TinyStories paper's grid: hidden size x layers, GPT-Neo, on TinyStories.

    tinyscale sweep plan sweeps/tinystories_paper.py
    tinyscale sweep run sweeps/tinystories_paper.py --sweep-dir gs://BUCKET/ts-paper --backend tpu

Hidden sizes 64..1024 x layers 1, 2, 4, 8, 12 (30 runs), context 512, the paper's
tokenizer (GPT-Neo's BPE cut to its 10K tokens most frequent in training), constant
learning rate 5e-4, AdamW betas (0.9, 0.95), weight decay 0.1 (the TinyStories-33M model
card's settings). Rows whose shape is a released TinyStories model are marked by
`sweep plan`. Every run is scored on the same 200 validation prompts (enough for MAUVE
to be stable: docs/results.md), the reference LM reading all of them.
"""

from tinyscale.config import get_config as default_config
from tinyscale.config.file import variant
from tinyscale.launch.plan import product

HIDDEN = (64, 128, 256, 512, 768, 1024)
LAYERS = (1, 2, 4, 8, 12)


def get_config(arg: str = ""):
    variant(arg)  # no variants: a ':ARG' is a mistake
    c = default_config()
    c.data.update(dataset="tinystories", tinystories_version="original",
                  tokenizer="gpt_neo_top10k", vocab_size=10_000)
    c.model.update(family="gpt_neo", n_heads=16, max_seq_len=512, window_size=256,
                   attention_pattern="global,local")
    c.train.update(seq_len=512, batch_size=80, tokens=2_000_000_000, lr=5e-4,
                   schedule="constant", warmup_steps=100, b1=0.9, b2=0.95, weight_decay=0.1,
                   checkpoint_every=1000, log_every=50)
    c.eval.update(every=1000, batches=20, prompts=200, beams=1, fluency_prompts=200,
                  mauve=True, novelty=True)
    c.mesh.update(data=-1, fsdp=1, tensor=1)
    return c


def sweep(arg: str = ""):
    return product({"model.d_model": list(HIDDEN), "model.n_layers": list(LAYERS)})
