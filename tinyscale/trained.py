"""A trained run, loaded back from its run directory for sampling and evaluation."""

from __future__ import annotations

import dataclasses

import jax
import ml_collections

from tinyscale import checkpoint, optim, parallel, steps
from tinyscale import config as config_lib
from tinyscale.data import pipeline, tokenizer
from tinyscale.errors import TinyscaleError
from tinyscale.model import ModelSpec
from tinyscale.rundir import RunDir


@dataclasses.dataclass
class Trained:
    config: ml_collections.ConfigDict
    meta: dict
    params: steps.Params
    arrays: dict
    step: int
    data_dir: str

    @property
    def sp(self):
        return tokenizer.load(f"{self.data_dir}/tokenizer.model")


def _with_defaults(saved: dict) -> ml_collections.ConfigDict:
    """The saved config over today's defaults, so knobs added since get their defaults."""
    config = config_lib.get_config()

    def merge(node, values):
        for key, value in values.items():
            if isinstance(value, dict) and key in node:
                merge(node[key], value)
            elif key in node:
                node[key] = value
    merge(config, saved)
    return config


def load(workdir: str, step: int | None = None, mesh=None) -> Trained:
    """The run's config, data and parameters at `step` (default: the newest checkpoint)."""
    run = RunDir(workdir)
    saved = run.read_json(run.config)
    if saved is None:
        raise TinyscaleError(f"{workdir} is not a run directory (no config.json): pass the "
                             "--workdir of a `tinyscale train` run.")
    config = _with_defaults(saved)
    ckpt = checkpoint.Checkpoints(run.checkpoints, keep=config.train.keep_checkpoints)
    available = ckpt.manager.all_steps()
    if not available or (step is not None and step not in available):
        at = "" if step is None else f" at step {step}"
        raise TinyscaleError(f"{workdir} has no checkpoint{at} (it has {sorted(available)}): "
                             "train it first or pick a saved step.")
    data_dir = pipeline.prepare(config, progress=False)
    meta = pipeline.load_meta(data_dir)
    mesh = mesh or parallel.make_mesh(config)
    params = steps.Params(ModelSpec.from_config(config.model, meta["vocab_size"]), mesh,
                          config.seed)
    tx = optim.optimizer(config.train, 1)
    with jax.set_mesh(mesh):
        template = {"params": params.initial, "opt_state": tx.init(params.initial)}
    step = max(available) if step is None else step
    state = ckpt.restore(template, step)
    ckpt.close()
    return Trained(config, meta, params, state["params"], step, data_dir)
