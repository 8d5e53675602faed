"""The training loop: K >= 1 runs of one shape trained as one program, resumable, sharded,
and honest about interruptions.

K = 1 is a run trained alone (`tinyscale train`, a sweep with launch.pack=1); K > 1 is
packing (tinyscale/train/packed.py: which runs pack, and the stacked step). Every run
keeps its own run directory -- metrics.jsonl, checkpoints (in the solo layout: a packed
run can resume alone and back), evaluation, state.json (with `packed_with`: the other
runs of its group).

Starting runs whose workdirs hold checkpoints resumes them (parameters, optimizer and
data position: batches are a pure function of the step), from the newest step every run
has a good checkpoint of (a damaged one is set aside and named; a run already past that
step keeps its newer checkpoints: saves are deterministic). SIGTERM or SIGINT saves and
exits with EXIT_PREEMPTED (EXIT_INTERRUPTED for Ctrl-C); a second signal while it saves
changes nothing. A run whose loss turns non-finite is marked failed and its lane ignored
while the others train on (alone: exit 1); a full disk marks the runs failed with one
line. The trainer holds each run's lock: a second trainer of the same workdir is refused;
a lock lost to another host (an expired lease) stops it without a save. Metrics are read
one step late, so the host never waits for the step it just dispatched. A run alone may
also branch (tinyscale/train/branches.py) and learn from a teacher (train/distill.py).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tinyscale import config as config_lib
from tinyscale import parallel
from tinyscale.data import generated, pipeline
from tinyscale.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED, TinyscaleError
from tinyscale.evals import run as evals
from tinyscale.model import counting
from tinyscale.model.spec import ModelSpec
from tinyscale.storage import is_remote
from tinyscale.train import (
    branches,
    checkpoint,
    distill,
    lifecycle,
    metrics,
    optim,
    packed,
    steps,
    trained,
)
from tinyscale.train.lease import host_id
from tinyscale.train.rundir import RunDir


def main(config, workdir: str) -> int:
    """Train (or resume) the run in `workdir`; the process exit code.

    `config` is validated where it was made (config_file.resolve, plan.expand)."""
    return train([config], [workdir])


def train(configs: list, workdirs: list[str]) -> int:
    """Train (or resume) the runs in `workdirs` as one program; 0 when all are done. Runs
    already done are left out; the locks are taken here."""
    runs = []
    for config, workdir in zip(configs, workdirs, strict=True):
        config.output.workdir = str(workdir)
        distill.check(config)
        if config.data.dataset == "generated":  # before the run directory is made
            generated.check_dir(os.path.expanduser(config.data.dir))
        run = RunDir(workdir)
        run.check_workdir()
        lifecycle.check_same_run(run, config)
        runs.append(run)
    keys = {packed.key(c) for c in configs}
    if len(runs) > 1 and (len(keys) != 1 or None in keys):
        raise TinyscaleError("these runs cannot be packed: they differ in more than "
                             f"{', '.join(packed.PACKABLE)}, or have train.branches or a "
                             "teacher; train them apart (launch.pack=1).")
    todo = [i for i, r in enumerate(runs) if r.state().get("state") != "done"]
    if not todo:
        if len(runs) == 1:
            print(f"{workdirs[0]}: already done ({runs[0].state().get('step')} steps).",
                  file=sys.stderr)
        return 0
    configs, runs = [configs[i] for i in todo], [runs[i] for i in todo]
    c = configs[0]
    d = c.distributed
    parallel.initialize_distributed(d.coordinator, d.num_processes, d.process_id)
    mesh = parallel.make_mesh(c)  # a model the mesh cannot shard: before any write

    def work():
        data_dir = pipeline.prepare(c, progress=jax.process_index() == 0,
                                    sweep_dir=runs[0].sweep_dir)
        return Trainer(configs, runs, mesh, data_dir).run()
    return lifecycle.locked(runs, c, work)


def _train_branch(branch, mesh, data_dir) -> int:
    """Train a branch's cool-down (tinyscale/train/branches.py) as the run it is."""
    run = branch.rundir
    run.check_workdir()
    lifecycle.check_same_run(run, branch.config)
    if run.state().get("state") == "done":
        return 0
    return lifecycle.locked([run], branch.config,
                   lambda: Trainer([branch.config], [run], mesh, data_dir).run())


class Trainer:
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
        self.schedules = [optim.schedule(x.train, self.total) for x in configs]
        self.tx = optim.optimizer(t, self.total)  # a run's own (the checkpoint's layout)
        self.teacher = distill.load(c, mesh, self.meta) if self.k == 1 else None
        if self.k == 1:
            self.train_step = steps.make_train_step(self.params[0], self.tx, t.grad_accum,
                                                    self.teacher)
        else:
            self.scalars = {k: jnp.asarray([x.train[k] for x in configs], jnp.float32)
                            for k in packed.SCALARS}
            self.packed_step, self.init_opt = packed.make_steps(self.params[0], t, self.total)
        self.eval_step = steps.make_eval_step(self.params[0])
        # what the step computes: a teacher's forward pass too
        self.flops_per_token = counting.flops_per_token(self.spec, t.seq_len) + (
            self.teacher.flops_per_token if self.teacher else 0.0)
        self.branches = branches.of(c) if self.k == 1 else []
        self.forks = {b.fork: [x for x in self.branches if x.fork == b.fork]
                      for b in self.branches}
        self.peak = metrics.peak_flops(c.output.peak_flops)
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

    # ---- the run axis (none when K = 1) -----------------------------------------------

    def _stack(self, trees: list):
        if self.k == 1:
            return trees[0]

        def stack(*xs):
            sharding = xs[0].sharding
            spec = sharding.spec if isinstance(sharding, NamedSharding) else P()
            return jax.device_put(jnp.stack(xs), NamedSharding(self.mesh, P(None, *spec)))
        return jax.tree.map(stack, *trees)

    def _slice(self, tree, i: int):
        return tree if self.k == 1 else jax.tree.map(lambda x: x[i], tree)

    def _batch(self, step: int) -> jax.Array:
        rows = [d.batch(step) for d in self.train_data]
        if self.k == 1:
            return parallel.global_batch(rows[0], self.mesh)
        sharding = NamedSharding(self.mesh, P(None, ("data", "fsdp"), None))
        return jax.make_array_from_process_local_data(sharding, np.stack(rows))

    def _step(self, arrays, opt_state, batch):
        if self.k == 1:
            return self.train_step(arrays, opt_state, batch)
        return self.packed_step(arrays, opt_state, batch, self.scalars)

    # ---- start, save, finish ----------------------------------------------------------

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
        common = set.intersection(*(set(ck.steps()) for ck in self.ckpts))
        for step in sorted(common, reverse=True):
            states = []
            for ck, writer in zip(self.ckpts, self.writers, strict=True):
                try:
                    states.append(ck.restore(like, step))
                except Exception as error:  # a damaged one: set aside, try the step before
                    ck._set_aside(step, error, writer.message)
            if len(states) < self.k:
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
                run.truncate_metrics(0)  # lines of an attempt killed before a save
        if self.k == 1:
            return like["params"], like["opt_state"], 0, [0.0]
        arrays = self._stack([p.initial for p in self.params])
        with jax.set_mesh(self.mesh):
            opt_state = self.init_opt(arrays, self.scalars)
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

    def run(self) -> int:
        arrays, opt_state, step, walls = self._start()
        self._fork(step, arrays, opt_state)  # restored at a fork step: fork if not yet
        names = [r.path.name for r in self.runs]
        if self.lead:
            for run in self.runs:
                packed_with = {"packed_with": [n for n in names if n != run.path.name]} \
                    if self.k > 1 else {}
                run.set_state("running", attempts=run.state().get("attempts", 0) + 1,
                              step=step, total_steps=self.total,
                              cores=sorted(os.sched_getaffinity(0)), **packed_with)
        if self.k > 1:
            self.writers[0].message(f"training {self.k} runs as one program: "
                                    f"{', '.join(names)}")
        signals = lifecycle.Signals()  # caught until the final checkpoints are safe
        try:
            try:
                step, arrays, opt_state = self._loop(arrays, opt_state, step, walls, signals)
            finally:
                for writer in self.writers:
                    writer.close()
            lost = [r for r in self.runs if r.lock_lost()]
            if lost:  # another host holds a run now: write nothing more
                self.writers[0].message(f"{lost[0].path}: lost the run's lease (it expired "
                                        "and another worker took over); stopping without "
                                        "a save")
                # a save begun while the lease was ours completes (an orbax save is
                # atomic, and deterministic: the new holder may use it); an unclosed
                # manager would hold the process at exit for minutes
                self._close_checkpoints()
                return EXIT_PREEMPTED
            return self._finish(step, arrays, opt_state, signals)
        finally:
            signals.restore()

    def _loop(self, arrays, opt_state, step, walls, signals):
        """Train until the last step, a signal, no run left or a lost lock; (step, arrays,
        opt_state) at the end."""
        c = self.c
        start, pending = time.perf_counter(), None
        tokens_per_step = c.train.batch_size * c.train.seq_len
        last_time, last_step = start, step
        while step < self.total and signals.received is None and any(self.alive) \
                and not any(r.lock_lost() for r in self.runs):
            arrays, opt_state, out = self._step(arrays, opt_state, self._batch(step))
            step += 1
            if pending is not None:
                self._check_finite(*pending)
            pending = (step, out)
            if step % c.train.log_every and step % c.eval.every \
                    and step % c.train.checkpoint_every and step != self.total \
                    and step not in self.forks:
                continue
            self._check_finite(*pending)
            now = time.perf_counter()
            rate = (step - last_step) * tokens_per_step / max(now - last_time, 1e-9)
            last_time, last_step = now, step
            for i in range(self.k):
                if not self.alive[i]:
                    continue
                lane = self._slice(out, i)
                record = {"step": step, "tokens": step * tokens_per_step,
                          "train_loss": float(lane["loss"]),
                          "grad_norm": float(lane["grad_norm"]),
                          "lr": float(self.schedules[i](step - 1)), "tokens_per_s": rate,
                          "mfu": self.k * rate * self.flops_per_token / self.peak,
                          "wall_s": walls[i] + now - start, "worker": self.worker,
                          **metrics.router(lane),
                          **({"distill_kl": float(lane["distill_kl"])} if "distill_kl" in lane
                             else {})}
                if step % c.eval.every == 0 or step == self.total:
                    record.update(self._held_out(arrays, i))
                self.writers[i].write(record)
            self._fork(step, arrays, opt_state)
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
        loss = np.atleast_1d(np.asarray(out["loss"]))
        for i in range(self.k):
            if self.alive[i] and not math.isfinite(float(loss[i])):
                self.alive[i] = False
                message = f"non-finite loss ({float(loss[i])}) at step {step}"
                if self.lead:
                    self.runs[i].set_state("failed", step=step, last_error=message)
                self.writers[i].message(f"{self.runs[i].path}: {message}" + (
                    "; the other runs of its group train on" if self.k > 1 else ""))

    def _fork(self, step: int, arrays, opt_state) -> None:
        """At a branch's fork step, its first checkpoint (before the run's own save)."""
        for branch in self.forks.get(step, ()):
            if branches.fork(branch, step, {"params": arrays, "opt_state": opt_state},
                             self.runs[0], self.lead):
                self.writers[0].message(f"step {step}: forked the {branch.tokens:,}-token "
                                        f"branch into {branch.rundir.path}")

    def _finish(self, step, arrays, opt_state, signals) -> int:
        self._save(step, arrays, opt_state)
        self._close_checkpoints()
        live = [i for i in range(self.k) if self.alive[i]]
        if not live:  # each run failed (non-finite loss) and says so
            return 1
        if signals.received is not None:
            return self._stopped(live, step, signals.received,
                                 "checkpoint saved" if self.k == 1 else "checkpoints saved")
        evaluated = all([self._final_evaluation(i, step, arrays) for i in live])
        for branch in self.branches:  # each trains its cool-down, then the run is done
            if signals.received is not None:
                return self._stopped(live, step, signals.received, "branches left to train")
            code = _train_branch(branch, self.mesh, self.data_dir)
            state = branch.rundir.state()
            run = self.runs[0]
            if code in (EXIT_PREEMPTED, EXIT_INTERRUPTED):
                if self.lead:
                    run.set_state("pending", step=step, last_error=state.get(
                        "last_error") or f"the {branch.tokens}-token branch stopped")
                return code
            if state.get("state") != "done":
                if self.lead:
                    run.set_state("failed", step=step, last_error=f"the {branch.tokens}-token "
                                  f"branch failed: {state.get('last_error')}")
                return 1
            evaluated = evaluated and code == 0
        if self.lead:
            for i in live:
                run = self.runs[i]
                final = run.read_metrics()[-1]
                run.set_state("done", step=step, last_error=None)
                self.writers[i].message(
                    f"{run.path}: done, {step} steps, eval loss {final.get('eval_loss'):.4f}"
                    + (f", {len(self.branches)} branches" if self.branches else ""))
        return 0 if evaluated and len(live) == self.k else 1

    def _stopped(self, live: list[int], step: int, signum: int, what: str) -> int:
        name = signal.Signals(signum).name
        if self.lead:
            for i in live:
                self.runs[i].set_state("pending", step=step,
                                       last_error=f"{name} at step {step}")
        self.writers[0].message(f"{name}: {what} at step {step}; run again to resume.")
        return EXIT_PREEMPTED if signum == signal.SIGTERM else EXIT_INTERRUPTED

    def _final_evaluation(self, i: int, step: int, arrays) -> bool:
        """Run i's eval.json for the final step (kept if a run stopped in its branches
        has it)."""
        run = self.runs[i]
        done = run.read_json(run.eval) or {}
        if done.get("step") == step and "error" not in done:
            return True
        evaluated, many = True, jax.process_count() > 1
        # Several hosts: every one hands process 0 the final parameters, which it then
        # evaluates alone on its own devices while the others wait at a barrier.
        host_arrays = multihost_utils.process_allgather(self._slice(arrays, i), tiled=True) \
            if many and self.c.eval.at_end else None
        if self.lead:
            final = run.read_metrics()[-1]
            if self.c.eval.at_end:
                evaluated = self._evaluate(i, step, host_arrays)
            else:
                run.write_json(run.eval, {
                    "step": step, "loss": final.get("eval_loss"),
                    "loss_se": final.get("eval_loss_se"), "bits_per_byte": final.get("eval_bpb")})
        parallel.barrier(f"evaluated-{run.path}-{step}")
        return evaluated

    def _evaluate(self, i: int, step: int, host_arrays: dict | None = None) -> bool:
        """Run i's full evaluation; a failure is kept on the run, not lost with it.
        `host_arrays`: the final parameters in host memory (multi-host: evaluated on
        this process's own devices, not read back from the checkpoint)."""
        run, say = self.runs[i], self.writers[i].message
        say(f"{run.path}: evaluating story completions..." if self.k > 1
            else "evaluating story completions...")
        try:
            workdir = str(run.path)
            loaded = None if host_arrays is None else trained.on_local_devices(
                workdir, step, host_arrays, self.data_dir)
            result = evals.evaluate(workdir, step, say=say, loaded=loaded)
        except Exception as error:  # the model is trained: keep it done, say why no eval
            run.write_json(run.eval, {"step": step, "error": repr(error)})
            say(f"evaluation failed: {error}; the model is trained and kept: fix that, then "
                "run `tinyscale eval` on the run")
            return False
        say(f"coherence {result['coherence']:.3f}  grammar {result['grammar']:.3f}  "
            f"consistency {result['consistency']:.3f}")
        return True
