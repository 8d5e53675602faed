"""The runs a trainer trains as one program, and their state: K runs of one shape
(configs differing only in packed.PACKABLE knobs), each with its data, parameters,
optimizer, writers and checkpoints, started (from the newest step every run has a good
checkpoint of, else from the start) and saved. The loop over them is trainer.py's
`Trainer`, a `RunGroup`.
"""

from __future__ import annotations

import os

import jax

from tinyscale import config as config_lib
from tinyscale.data import pipeline
from tinyscale.model import counting, mup
from tinyscale.model.spec import ModelSpec
from tinyscale.storage import is_remote
from tinyscale.train import branches, checkpoint, distill, metrics, optim, packed, steps
from tinyscale.train.lease import host_id
from tinyscale.train.rundir import RunDir


class RunGroup:
    """K runs of one shape (configs differing only in packed.PACKABLE knobs). With K = 1
    the parameters, optimizer state and batch have no run axis and the step is the solo
    step; with K > 1 they are stacked over a leading run axis."""

    def __init__(self, configs: list, runs: list[RunDir], mesh, data_dir: str):
        c = configs[0]
        self.c, self.configs, self.runs, self.mesh, self.data_dir = c, configs, runs, mesh, \
            data_dir
        self.k = len(runs)
        self.meta = pipeline.load_meta(data_dir)
        self.spec = ModelSpec.from_config(c.model, self.meta["vocab_size"])
        self.total = config_lib.total_steps(c)
        self.lead = jax.process_index() == 0
        self.worker = f"{host_id()}:{os.getpid()}"  # who trained each logged step
        t = c.train
        where, proc = (t.seq_len, t.batch_size), (jax.process_index(), jax.process_count())
        self.train_data = [pipeline.Batches(data_dir, "train", *where, x.seed, *proc)
                           for x in configs]
        self.eval_data = [pipeline.Batches(data_dir, "eval", *where, x.seed, *proc)
                          for x in configs]
        self.params = [steps.Params(self.spec, mesh, x.seed) for x in configs]
        self.schedules = [optim.learning_rate(x.train, self.total) for x in configs]
        # a run's own (the checkpoint's layout); µP: per-parameter learning rates
        self.tx = optim.optimizer(t, self.total,
                                  mup.lr_scales(self.spec, self.params[0].initial))
        self.teacher = distill.load(c, mesh, self.meta) if self.k == 1 else None
        # the step's arguments, not its constants: one program serves other rates, budgets
        self.numbers = optim.stacked([optim.numbers(x.train, self.total) for x in configs])
        if self.k == 1:
            self.train_step = steps.make_train_step(self.params[0], t, self.total,
                                                    self.teacher)
        else:
            self.packed_step, self.init_opt = packed.make_steps(self.params[0], t, self.total)
        self.eval_step = steps.make_eval_step(self.params[0], t.quick_compile)
        # what the step computes: a teacher's forward pass too
        self.flops_per_token = counting.flops_per_token(self.spec, t.seq_len) + (
            self.teacher.flops_per_token if self.teacher else 0.0)
        self.branches = branches.of(c) if self.k == 1 else []
        self.forks = {b.fork: [x for x in self.branches if x.fork == b.fork]
                      for b in self.branches}
        self.peak = metrics.peak_flops(c.output.peak_flops, c.data.cache_dir)
        wandb = metrics.wandb_run(runs[0], c.output, c.to_dict()) \
            if self.lead and c.output.wandb and self.k == 1 else None
        self.writers = [metrics.MetricsWriter(r, self.total, self.lead, c.output.tensorboard,
                                              c.output.progress and i == 0,
                                              wandb if i == 0 else None)
                        for i, r in enumerate(runs)]
        self.ckpts = [checkpoint.Checkpoints(
            r.checkpoints if is_remote(r.path) else r.checkpoints.resolve(),
            t.keep_checkpoints) for r in runs]
        self.alive = [True] * self.k

    # ---- the run axis (none when K = 1; stacking: packed.py) --------------------------

    def _slice(self, tree, i: int):
        return tree if self.k == 1 else jax.tree.map(lambda x: x[i], tree)

    def _step(self, arrays, opt_state, batch):
        if self.k == 1:
            return self.train_step(arrays, opt_state, batch, self.numbers)
        return self.packed_step(arrays, opt_state, batch, self.numbers)

    # ---- start, save ------------------------------------------------------------------

    def _start(self):
        """(arrays, opt_state, step, wall seconds so far per run), from the newest step
        every run has a good checkpoint of, else from the start. Each run keeps its
        tokenizer and held-out split (pipeline.keep_with_run)."""
        if self.lead:
            for run in self.runs:
                pipeline.keep_with_run(self.data_dir, run.data)
        arrays = self.params[0].initial
        with jax.set_mesh(self.mesh):
            like = {"params": arrays, "opt_state": self.tx.init(arrays)}
        found = checkpoint.restore_common(self.ckpts, like, [w.message for w in self.writers])
        if found is not None:
            step, states = found
            walls = []
            for run, writer in zip(self.runs, self.writers, strict=True):
                past = [m for m in run.read_metrics() if m["step"] <= step]
                walls.append(past[-1]["wall_s"] if past else 0.0)
                if self.lead:
                    run.truncate_metrics(step)
                    writer.message(f"resuming {run.path} from step {step}")
            stacked = packed.stack(states, self.mesh)
            return stacked["params"], stacked["opt_state"], step, walls
        if self.lead:
            for run, config in zip(self.runs, self.configs, strict=True):
                run.write_json(run.config, config.to_dict())
                run.truncate_metrics(0)  # lines of an attempt killed before a save
        if self.k == 1:
            return like["params"], like["opt_state"], 0, [0.0]
        arrays = packed.stack([p.initial for p in self.params], self.mesh)
        with jax.set_mesh(self.mesh):
            opt_state = self.init_opt(arrays, self.numbers)
        return arrays, opt_state, 0, [0.0] * self.k

    def _save(self, step: int, arrays, opt_state) -> None:
        for i, ck in enumerate(self.ckpts):
            if self.alive[i] and step not in ck.steps():
                ck.save(step, {"params": self._slice(arrays, i),
                               "opt_state": self._slice(opt_state, i)})

    def _close_checkpoints(self) -> None:
        for ck in self.ckpts:
            ck.wait()
            ck.close()
