"""`tinyscale eval --hf DIR --sweep SWEEP_DIR`: score a Hugging Face causal LM as a run.

The model (GPT-Neo -- the released roneneldan/TinyStories-* -- Phi, Llama, Mistral or
Mixtral, a local directory in the Hugging Face layout: offline, nothing is downloaded)
is loaded into tinyscale's own Transformer (tinyscale/interop/hf.py) and completes exactly
the prompts of the sweep's runs, with its own tokenizer (`AutoTokenizer` from the same
directory), under the sweep's eval settings; the completions are scored by the same
metrics. The result is a run-like directory, `SWEEP_DIR/external/<name>/` -- config.json
(the sweep's data and eval settings, the model's shape), state.json (done, `hf_source`),
eval.json and samples.jsonl -- that `tinyscale analyze` places beside the sweep's runs.

The held-out loss is not computed: the sweep's loss is per token of its own tokenizer,
which the model does not use, so it would not compare.
"""

from __future__ import annotations

import dataclasses
import json
import os

from flax import nnx

from tinyscale import config as config_lib
from tinyscale import parallel
from tinyscale.errors import TinyscaleError
from tinyscale.evals import run as evals
from tinyscale.interop import hf as interop
from tinyscale.model.spec import ModelSpec
from tinyscale.train import steps
from tinyscale.train.rundir import RunDir

EXTERNAL = "external"  # <sweep>/external/<name>: models from elsewhere, scored as runs


class _Tokenizer:
    """A Hugging Face tokenizer with the encode / decode of a sentencepiece processor."""

    def __init__(self, tok):
        self.tok = tok

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)


@dataclasses.dataclass
class HFModel:
    """What evals.run needs of a trained run, for a Hugging Face model."""
    config: object
    params: object
    arrays: dict
    sp: _Tokenizer
    eos_id: int
    step: int = 0
    newest: bool = True
    meta: dict = dataclasses.field(default_factory=dict)  # no prepared data of its own


def _loader(hf_config: dict):
    kind = hf_config.get("model_type", "")
    loaders = {"gpt_neo": interop.load_gpt_neo, "phi": interop.load_phi,
               "llama": interop.load_llama, "mistral": interop.load_llama,
               "mixtral": interop.load_llama}
    if kind not in loaders:
        raise TinyscaleError(f"model_type {kind!r} is not one tinyscale can load: use a "
                             "GPT-Neo, Phi, Llama, Mistral or Mixtral checkpoint.")
    return loaders[kind]


def load(hf_dir: str, base) -> HFModel:
    """The Hugging Face model in `hf_dir` as tinyscale arrays, with the settings of
    `base` (a sweep's config) for data and evaluation."""

    path = os.path.join(hf_dir, "config.json")
    if not os.path.exists(path):
        raise TinyscaleError(f"--hf {hf_dir} holds no config.json: give a local Hugging Face "
                             "model directory (nothing is downloaded here).")
    with open(path) as f:
        hf_config = json.load(f)
    try:
        from transformers import AutoTokenizer  # optional: the hf extra
        tok = AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
    except ImportError:
        raise TinyscaleError("eval --hf needs transformers: pip install 'tinyscale[hf]'.") \
            from None
    except (OSError, ValueError) as error:
        raise TinyscaleError(f"--hf {hf_dir}: no tokenizer there ({str(error)[:120]}): save "
                             "the model's tokenizer into the same directory.") from None
    c, model = _loader(hf_config)(hf_dir)
    config = config_lib.from_saved(base.to_dict())
    config.model = c.model
    config.data.vocab_size = c.data.vocab_size
    config.train.seq_len = min(config.train.seq_len, c.model.max_seq_len)
    config.mesh.update(data=1, fsdp=1, tensor=1)
    mesh = parallel.make_mesh(config, [__import__("jax").devices()[0]])
    params = steps.Params(ModelSpec.from_config(c.model, c.data.vocab_size), mesh, 0,
                          materialize=False)
    arrays = {"/".join(map(str, p)): v.get_value() for p, v in
              nnx.to_flat_state(nnx.state(model))}
    eos = tok.eos_token_id if tok.eos_token_id is not None else hf_config.get("eos_token_id")
    return HFModel(config, params, arrays, _Tokenizer(tok), int(eos))


def evaluate(hf_dir: str, sweep_dir: str, name: str | None = None, say=print) -> dict:
    """Score the model against the sweep's prompts; its run-like directory's eval.json."""
    sweep_file = os.path.join(sweep_dir, "sweep.json")
    if not os.path.exists(sweep_file):
        raise TinyscaleError(f"--sweep {sweep_dir} is not a sweep directory (no sweep.json): "
                             "give the sweep whose runs the model is scored beside.")
    with open(sweep_file) as f:
        base = config_lib.from_saved(json.load(f)["base"])
    name = name or os.path.basename(os.path.normpath(hf_dir))
    run = RunDir(os.path.join(sweep_dir, EXTERNAL, name))
    if run.state().get("state") == "done":
        raise TinyscaleError(f"{run.path} is already scored: pass another --name, or delete "
                             "it to score again.")
    m = load(hf_dir, base)
    say(f"scoring {hf_dir} ({m.config.model.family}, "
        f"{sum(x.size for x in m.arrays.values()):,} parameters) on the prompts of "
        f"{sweep_dir}")
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_json(run.config, m.config.to_dict())
    result = evals.write_evaluation(m, run, {"step": 0}, say)
    run.set_state("done", step=0, hf_source=os.path.abspath(hf_dir), last_error=None)
    return result
