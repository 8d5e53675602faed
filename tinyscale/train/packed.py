"""Packing: K runs of one shape trained as one program (`launch.pack`).

Runs that differ only in knobs a step can take as numbers -- the seed (parameter init and
data order) and the optimizer's scalars (PACKABLE) -- share one compiled step over a
leading run axis: parameters, optimizer states and batches are stacked, and `jax.vmap`
maps the solo train step (tinyscale/train/steps.py) over them, each run's optimizer built from
its own scalars. A small model leaves an accelerator (or a CPU's vector units) mostly
idle; K of them in one program fill it (bench/pack.py measures models per hour).

Every run keeps its own run directory -- metrics.jsonl, checkpoints (its slice of the
stack, in the solo layout: a packed run can resume solo and back), evaluation, state.json
with `packed_with` (the other runs of its group). A run whose loss turns non-finite is
marked failed and its lane ignored while the others train on. The group resumes from the
newest step every run has a checkpoint of; a run already past it keeps its newer
checkpoints (saves are deterministic, so the one it would write again is the same).
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tinyscale import config as config_lib
from tinyscale import parallel
from tinyscale.data import pipeline
from tinyscale.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED, TinyscaleError
from tinyscale.model import counting
from tinyscale.model.transformer import ModelSpec
from tinyscale.train import checkpoint, metrics, optim, steps
from tinyscale.train.lease import host_id
from tinyscale.train.rundir import RunDir, is_remote

PACKABLE = ("seed", "train.lr", "train.b1", "train.b2", "train.eps", "train.weight_decay",
            "train.final_lr_ratio")
SCALARS = tuple(k.split(".")[1] for k in PACKABLE if k.startswith("train."))
AUTO_MAX = 16  # launch.pack=auto: at most this many runs in one program


def key(config) -> str | None:
    """What runs packed together share: the config less the PACKABLE knobs and its
    workdir. None for a run that trains alone (one with branches or a teacher)."""
    d = config.to_dict()
    if d["train"].get("branches") or d["train"].get("teacher"):
        return None
    d.pop("seed", None)
    for k in SCALARS:
        d["train"].pop(k, None)
    d["output"].pop("workdir", None)
    return json.dumps(d, sort_keys=True, default=str)


def groups(named_configs: list[tuple[str, object]], pack) -> list[list[str]]:
    """The runs' names in groups that train as one program: runs with one `key`, up to
    `pack` at a time ("auto": all of them, at most AUTO_MAX, split evenly)."""
    by_key: dict = {}
    for name, config in named_configs:
        k = key(config)
        by_key.setdefault(k if k is not None else f"alone:{name}", []).append(name)
    out = []
    for k, names in by_key.items():
        size = 1 if k.startswith("alone:") else (AUTO_MAX if pack == "auto" else int(pack))
        count = math.ceil(len(names) / size)
        out += [names[i::count] for i in range(count)]  # even sizes
    return out


def make_steps(params: steps.Params, t, total: int, vectorize: bool | None = None):
    """(train_step, init_opt) over a leading run axis: train_step(arrays_K, opt_state_K,
    batch_KBT, scalars) with `scalars` = {name: [K]} of SCALARS, each run's optimizer
    built from its own; init_opt(arrays_K, scalars) its optimizer states.

    `vectorize`: the runs' step as one batched computation (jax.vmap: what fills an
    accelerator), or one run after another inside the program (jax.lax.map). Default:
    vectorized except on CPU, where bench/pack.py measured the batched matmuls slower
    than K separate ones (0.6x per model at d16-d32)."""
    step = steps.step_fn(params, t.grad_accum)
    if vectorize is None:
        vectorize = jax.default_backend() != "cpu"

    def one(arrays, opt_state, batch_BT, values):
        return step(arrays, opt_state, batch_BT, optim.optimizer(_scalars(t, values), total))

    def init(arrays, values):
        return optim.optimizer(_scalars(t, values), total).init(arrays)
    if vectorize:
        return jax.jit(jax.vmap(one), donate_argnums=(0, 1)), jax.jit(jax.vmap(init))

    def in_turn(*args):
        return jax.lax.map(lambda xs: one(*xs), args)
    return jax.jit(in_turn, donate_argnums=(0, 1)), jax.jit(jax.vmap(init))


def _scalars(t, values: dict):
    """The train section `t` with the optimizer's scalars replaced by (traced) values."""
    return types.SimpleNamespace(**{**{k: t[k] for k in t.keys()}, **values})


class PackedTrainer:
    def __init__(self, configs: list, runs: list[RunDir], mesh, data_dir: str):
        c = configs[0]
        self.c, self.configs, self.runs, self.mesh = c, configs, runs, mesh
        self.k = len(runs)
        self.meta = pipeline.load_meta(data_dir)
        self.spec = ModelSpec.from_config(c.model, self.meta["vocab_size"])
        self.total = config_lib.total_steps(c)
        self.lead = jax.process_index() == 0
        self.worker = f"{host_id()}:{os.getpid()}"
        t = c.train
        where = (t.seq_len, t.batch_size)
        proc = (jax.process_index(), jax.process_count())
        self.train_data = [pipeline.Batches(data_dir, "train", *where, x.seed, *proc)
                           for x in configs]
        self.eval_data = [pipeline.Batches(data_dir, "eval", *where, x.seed, *proc)
                          for x in configs]
        self.params = [steps.Params(self.spec, mesh, x.seed) for x in configs]
        self.scalars = {k: jnp.asarray([x.train[k] for x in configs], jnp.float32)
                        for k in SCALARS}
        self.schedules = [optim.schedule(x.train, self.total) for x in configs]
        self.solo_tx = optim.optimizer(t, self.total)  # the layout of a run's checkpoint
        self.train_step, self.init_opt = make_steps(self.params[0], t, self.total)
        self.eval_step = steps.make_eval_step(self.params[0])
        self.flops_per_token = counting.flops_per_token(self.spec, t.seq_len)
        self.peak = metrics.peak_flops(c.output.peak_flops)
        self.writers = [metrics.MetricsWriter(r, self.total, self.lead, c.output.tensorboard,
                                              c.output.progress and i == 0)
                        for i, r in enumerate(runs)]
        self.ckpts = [checkpoint.Checkpoints(
            r.checkpoints if is_remote(r.path) else r.checkpoints.resolve(),
            t.keep_checkpoints) for r in runs]
        self.alive = [True] * self.k

    # ---- stacking ---------------------------------------------------------------------

    def _stack(self, trees: list):
        def stack(*xs):
            sharding = xs[0].sharding
            spec = sharding.spec if isinstance(sharding, NamedSharding) else P()
            return jax.device_put(jnp.stack(xs), NamedSharding(self.mesh, P(None, *spec)))
        return jax.tree.map(stack, *trees)

    @staticmethod
    def _slice(tree, i: int):
        return jax.tree.map(lambda x: x[i], tree)

    def _batch(self, rows: list[np.ndarray]) -> jax.Array:
        sharding = NamedSharding(self.mesh, P(None, ("data", "fsdp"), None))
        return jax.make_array_from_process_local_data(sharding, np.stack(rows))

    # ---- start, save, finish ----------------------------------------------------------

    def _solo_like(self):
        arrays = self.params[0].initial
        with jax.set_mesh(self.mesh):
            return {"params": arrays, "opt_state": self.solo_tx.init(arrays)}

    def _start(self):
        """(arrays, opt_state, step, wall seconds so far per run), from the newest step
        every run has a checkpoint of, else from the start."""
        like = self._solo_like()
        common = set.intersection(*(set(ck.steps()) for ck in self.ckpts))
        for step in sorted(common, reverse=True):
            try:
                states = [ck.restore(like, step) for ck in self.ckpts]
            except Exception as error:  # a damaged one: set aside, try the next step
                for ck in self.ckpts:
                    try:
                        ck.restore(like, step)
                    except Exception:
                        ck._set_aside(step, error, self.writers[0].message)
                continue
            walls = []
            for run, writer in zip(self.runs, self.writers, strict=True):
                past = [m for m in run.read_metrics() if m["step"] <= step]
                walls.append(past[-1]["wall_s"] if past else 0.0)
                if self.lead:
                    run.truncate_metrics(step)
                    writer.message(f"resuming {run.path} from step {step}")
            stacked = self._stack(states)
            return stacked["params"], stacked["opt_state"], step, walls
        if self.lead:
            for run, config in zip(self.runs, self.configs, strict=True):
                run.write_json(run.config, config.to_dict())
                run.truncate_metrics(0)
        arrays = self._stack([p.initial for p in self.params])
        with jax.set_mesh(self.mesh):
            opt_state = self.init_opt(arrays, self.scalars)
        return arrays, opt_state, 0, [0.0] * self.k

    def _save(self, step: int, arrays, opt_state) -> None:
        for i, ck in enumerate(self.ckpts):
            if self.alive[i] and step not in ck.steps():
                ck.save(step, {"params": self._slice(arrays, i),
                               "opt_state": self._slice(opt_state, i)})

    def run(self) -> int:
        from tinyscale.train.trainer import _Signals
        arrays, opt_state, step, walls = self._start()
        names = [r.path.name for r in self.runs]
        if self.lead:
            for run in self.runs:
                attempts = run.state().get("attempts", 0) + 1
                run.set_state("running", attempts=attempts, step=step, total_steps=self.total,
                              cores=sorted(os.sched_getaffinity(0)),
                              packed_with=[n for n in names if n != run.path.name])
        self.writers[0].message(f"training {self.k} runs as one program: {', '.join(names)}")
        signals = _Signals()
        try:
            try:
                step, arrays, opt_state = self._loop(arrays, opt_state, step, walls, signals)
            finally:
                for writer in self.writers:
                    writer.close()
            return self._finish(step, arrays, opt_state, signals)
        finally:
            signals.restore()

    def _loop(self, arrays, opt_state, step, walls, signals):
        c = self.c
        start, pending = time.perf_counter(), None
        tokens_per_step = c.train.batch_size * c.train.seq_len
        last_time, last_step = start, step
        while step < self.total and signals.received is None and any(self.alive):
            batch = self._batch([d.batch(step) for d in self.train_data])
            arrays, opt_state, out = self.train_step(arrays, opt_state, batch, self.scalars)
            step += 1
            if pending is not None:
                self._check_finite(*pending)
            pending = (step, out)
            if step % c.train.log_every and step % c.eval.every \
                    and step % c.train.checkpoint_every and step != self.total:
                continue
            self._check_finite(*pending)
            now = time.perf_counter()
            rate = (step - last_step) * tokens_per_step / max(now - last_time, 1e-9)
            last_time, last_step = now, step
            loss, norm = np.asarray(out["loss"]), np.asarray(out["grad_norm"])
            for i in range(self.k):
                if not self.alive[i]:
                    continue
                record = {"step": step, "tokens": step * tokens_per_step,
                          "train_loss": float(loss[i]), "grad_norm": float(norm[i]),
                          "lr": float(self.schedules[i](step - 1)), "tokens_per_s": rate,
                          "mfu": self.k * rate * self.flops_per_token / self.peak,
                          "wall_s": walls[i] + now - start, "worker": self.worker,
                          **metrics.router(self._slice(out, i))}
                if step % c.eval.every == 0 or step == self.total:
                    record.update(self._held_out(arrays, i))
                self.writers[i].write(record)
            if step % c.train.checkpoint_every == 0 or step == self.total:
                self._save(step, arrays, opt_state)
        return step, arrays, opt_state

    def _held_out(self, arrays, i: int) -> dict:
        loss, bpb, se = steps.held_out(self.eval_step, self._slice(arrays, i),
                                       self.eval_data[i], self.c.eval.batches, self.mesh,
                                       self.meta["bytes_per_token"])
        return {"eval_loss": loss, "eval_loss_se": se, "eval_bpb": bpb}

    def _check_finite(self, step: int, out) -> None:
        """A run whose loss is not finite fails; the others train on."""
        loss = np.asarray(out["loss"])
        for i in range(self.k):
            if self.alive[i] and not math.isfinite(float(loss[i])):
                self.alive[i] = False
                message = f"non-finite loss ({float(loss[i])}) at step {step}"
                if self.lead:
                    self.runs[i].set_state("failed", step=step, last_error=message)
                self.writers[i].message(f"{self.runs[i].path}: {message}; the other runs of "
                                        "its group train on")

    def _finish(self, step, arrays, opt_state, signals) -> int:
        self._save(step, arrays, opt_state)
        for ck in self.ckpts:
            ck.wait()
            ck.close()
        live = [i for i in range(self.k) if self.alive[i]]
        if signals.received is not None:
            name = signal.Signals(signals.received).name
            for i in live:
                if self.lead:
                    self.runs[i].set_state("pending", step=step,
                                           last_error=f"{name} at step {step}")
            self.writers[0].message(f"{name}: checkpoints saved at step {step}; run again "
                                    "to resume.")
            return EXIT_PREEMPTED if signals.received == signal.SIGTERM else EXIT_INTERRUPTED
        evaluated = True
        for i in live:
            evaluated &= self._evaluate(i, step)
        return 0 if evaluated and len(live) == self.k else 1

    def _evaluate(self, i: int, step: int) -> bool:
        """Run i's final evaluation, as a solo run's (tinyscale/train/trainer.py) does it."""
        from tinyscale.evals import run as evals
        run, writer = self.runs[i], self.writers[i]
        ok = True
        if self.lead:
            final = run.read_metrics()[-1]
            if self.c.eval.at_end:
                writer.message(f"{run.path}: evaluating story completions...")
                try:
                    evals.evaluate(str(run.path), step, say=writer.message)
                except Exception as error:  # trained: keep it done, say why no eval
                    run.write_json(run.eval, {"step": step, "error": repr(error)})
                    writer.message(f"evaluation failed: {error}; the model is trained and "
                                   "kept: fix that, then run `tinyscale eval` on the run")
                    ok = False
            else:
                run.write_json(run.eval, {
                    "step": step, "loss": final.get("eval_loss"),
                    "loss_se": final.get("eval_loss_se"), "bits_per_byte": final.get("eval_bpb")})
            run.set_state("done", step=step, last_error=None)
            writer.message(f"{run.path}: done, {step} steps, eval loss "
                           f"{final.get('eval_loss'):.4f}")
        parallel.barrier(f"evaluated-{run.path}-{step}")
        return ok


def main(configs: list, workdirs: list[str]) -> int:
    """Train (or resume) the runs in `workdirs` as one program; 0 when all are done.
    Runs already done are left out; the caller holds no locks (they are taken here)."""
    from tinyscale.train import trainer as train
    runs = []
    for config, workdir in zip(configs, workdirs, strict=True):
        config.output.workdir = str(workdir)
        run = RunDir(workdir)
        run.check_workdir()
        train._check_same_run(run, config)
        runs.append(run)
    keys = {key(c) for c in configs}
    if len(keys) != 1 or None in keys:
        raise TinyscaleError("these runs cannot be packed: they differ in more than "
                             f"{', '.join(PACKABLE)}, or have train.branches; train them "
                             "apart (launch.pack=1).")
    todo = [i for i, r in enumerate(runs) if r.state().get("state") != "done"]
    if not todo:
        return 0
    configs, runs = [configs[i] for i in todo], [runs[i] for i in todo]
    c = configs[0]
    d = c.distributed
    parallel.initialize_distributed(d.coordinator, d.num_processes, d.process_id)
    held = []
    lead = jax.process_index() == 0
    try:
        for run in runs:
            if lead and not run.acquire(c.launch.stale_after_s):
                owner = run.lock_owner(c.launch.stale_after_s) or {}
                raise TinyscaleError(f"{run.path} is being trained by pid {owner.get('pid')} "
                                     f"on {owner.get('host')}: wait for it, or pack without it.")
            held.append(run)
        mesh = parallel.make_mesh(c)
        data_dir = pipeline.prepare(c, progress=lead, sweep_dir=runs[0].sweep_dir)
        return PackedTrainer(configs, runs, mesh, data_dir).run()
    except Exception as error:
        for run in held:
            if lead and run.state().get("state") == "running":
                failed = not isinstance(error, TinyscaleError)
                train._set_state_quietly(run, "failed" if failed else "pending",
                                         last_error=train._one_line(error))
        raise
    finally:
        for run in held:
            run.release()
