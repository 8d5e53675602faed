"""A trained run, loaded back from its run directory for sampling and evaluation."""

from __future__ import annotations

import dataclasses
import os
import sys

import jax
import ml_collections
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tinyscale import config as config_lib
from tinyscale import parallel
from tinyscale.config import check as config_check
from tinyscale.config import file as config_file
from tinyscale.data import location, pipeline
from tinyscale.errors import TinyscaleError
from tinyscale.model.spec import ModelSpec
from tinyscale.storage import is_remote
from tinyscale.train import checkpoint, steps
from tinyscale.train.rundir import RunDir


@dataclasses.dataclass
class Trained:
    config: ml_collections.ConfigDict
    meta: dict
    params: steps.Params
    arrays: dict
    step: int
    data_dir: str
    newest: bool = True  # the step is the run's newest checkpoint

    @property
    def sp(self):
        return pipeline.load_tokenizer(self.data_dir)


def saved_config(workdir: str, overrides: dict[str, str] | None = None,
                 ) -> ml_collections.ConfigDict:
    """The run's config.json over today's defaults, with `eval.*` overrides applied (the
    run's other knobs are what it was trained with and cannot change)."""
    run = RunDir(workdir)
    saved = run.read_json(run.config) if run.path.is_dir() else None
    if saved is None:
        raise TinyscaleError(f"{workdir} is not a run directory (no config.json): pass the "
                             "--workdir of a `tinyscale train` run.")
    config = config_lib.from_saved(saved)
    for key in overrides or {}:
        if not key.startswith(("eval.", "mesh.")):
            raise TinyscaleError(f"--config.{key} cannot change for a trained run: only "
                                 "--config.eval.* and --config.mesh.* apply here.")
    config_file.apply_overrides(config, overrides or {})
    return config_check.validate(config)


def _on(mesh, shapes: dict) -> dict:
    """Abstract arrays laid out on the concrete `mesh` (eval_shape gives abstract ones)."""
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=NamedSharding(
        mesh, getattr(v.sharding, "spec", None) or P())) for k, v in shapes.items()}


def _data_dir(run: RunDir, config, say) -> str:
    """The prepared data the run was trained on, where it was prepared; else the run's own
    copy (its tokenizer and held-out split: a run copied alone to another machine); else
    (a run trained before runs kept one) prepared again."""
    prepared = location.data_dir(config, run.sweep_dir)
    gone = not is_remote(prepared) and not os.path.exists(os.path.join(prepared, "meta.json"))
    if gone and not is_remote(run.path) and (run.data / "meta.json").exists():
        say(f"note: {prepared} is not here; reading the run's own tokenizer and held-out "
            f"split ({run.data}; without the training split there is no novelty)")
        return os.fspath(run.data)
    return pipeline.prepare(config, progress=False, sweep_dir=run.sweep_dir)


def load(workdir: str, step: int | None = None, mesh=None, config=None, say=None) -> Trained:
    """The run's config, data and parameters at `step` (default: the newest checkpoint
    that restores). Only the parameters are read, not the optimizer state."""
    say = say or (lambda m: print(m, file=sys.stderr))
    run = RunDir(workdir)
    config = config or saved_config(workdir)
    state = run.state()
    if state.get("state") == "failed":
        say(f"note: {workdir} is a failed run ({state.get('last_error')}); using its newest "
            "checkpoint")
    if not run.checkpoints.exists() or not any(
            p.name.isdigit() for p in run.checkpoints.iterdir()):
        raise TinyscaleError(f"{workdir} has no checkpoint yet: train it first "
                             "(tinyscale train --workdir ...).")
    data_dir = _data_dir(run, config, say)
    meta = pipeline.load_meta(data_dir)
    mesh = mesh or parallel.make_mesh(config)
    params = steps.Params(ModelSpec.from_config(config.model, meta["vocab_size"]), mesh,
                          config.seed, materialize=False)
    ckpt = checkpoint.Checkpoints(run.checkpoints, keep=config.train.keep_checkpoints,
                                  read_only=True)  # a reader changes nothing in the run
    try:
        if step is not None and step not in ckpt.steps():
            raise TinyscaleError(f"{workdir} has no checkpoint at step {step} (it has "
                                 f"{ckpt.steps()}): pick a saved --step.")
        found, state = ckpt.restore_good({"params": _on(mesh, params.initial)}, step, say)
        newest = found is not None and found == max(ckpt.steps())
    finally:
        ckpt.close()
    if found is None:
        raise TinyscaleError(f"no checkpoint of {workdir} restores (each is named above): "
                             "train the run again in a new --workdir.")
    return Trained(config, meta, params, state["params"], found, data_dir, newest)


def on_local_devices(workdir: str, step: int, host_arrays: dict, data_dir: str) -> Trained:
    """The run at `step` from parameters already in host memory, placed on this process's
    own devices (data-parallel over as many as split the batch): how process 0 of a
    multi-host slice evaluates alone after every host has saved the final checkpoint."""
    local = jax.local_devices()
    config = saved_config(workdir)
    per_step = config.train.batch_size // config.train.grad_accum
    n = next(k for k in range(len(local), 0, -1) if per_step % k == 0)
    config = saved_config(workdir, {"mesh.data": str(n), "mesh.fsdp": "1",
                                    "mesh.tensor": "1"})
    mesh = parallel.make_mesh(config, local[:n])
    meta = pipeline.load_meta(data_dir)
    params = steps.Params(ModelSpec.from_config(config.model, meta["vocab_size"]), mesh,
                          config.seed, materialize=False)
    shapes = _on(mesh, params.initial)
    arrays = {k: jax.device_put(host_arrays[k], v.sharding) for k, v in shapes.items()}
    return Trained(config, meta, params, arrays, step, data_dir, newest=True)
