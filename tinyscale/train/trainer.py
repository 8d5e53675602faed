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
The runs' state (built, started, saved) is train/group.py's, the final evaluation
train/final.py's; where each attempt's time goes (startup, compile, data, steps, eval,
checkpoints: <run>/goodput.jsonl) is train/goodput.py's accounting.
"""

from __future__ import annotations

import math
import os
import sys
import time

import jax
import numpy as np

from tinyscale import parallel
from tinyscale.data import generated, pipeline
from tinyscale.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED, TinyscaleError
from tinyscale.model.spec import ModelSpec
from tinyscale.train import (
    branches,
    distill,
    goodput,
    lifecycle,
    metrics,
    packed,
    provenance,
    steps,
)
from tinyscale.train.final import final_evaluation
from tinyscale.train.group import RunGroup
from tinyscale.train.rundir import RunDir


def main(config, workdir: str, evaluate) -> int:
    """Train (or resume) the run in `workdir`; the process exit code.

    `config` is validated where it was made (config_file.resolve, plan.expand);
    `evaluate` is the full evaluation at the end (train() says more)."""
    return train([config], [workdir], evaluate)


def train(configs: list, workdirs: list[str], evaluate) -> int:
    """Train (or resume) the runs in `workdirs` as one program; 0 when all are done. Runs
    already done are left out; the locks are taken here. `evaluate`: the full evaluation
    of a trained run, (workdir, step, say, loaded) -> result, i.e.
    tinyscale.evals.run.evaluate, handed down by the command that trains (evaluation
    stands above training: it loads trained runs)."""
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
    parallel.initialize_distributed(c.distributed)
    mesh = parallel.make_mesh(c)  # a model the mesh cannot shard: before any write
    ModelSpec.from_config(c.model, c.data.vocab_size).on()  # a kernel this device lacks too

    def work():
        data_dir = pipeline.prepare(c, progress=jax.process_index() == 0,
                                    sweep_dir=runs[0].sweep_dir)
        return Trainer(configs, runs, mesh, data_dir, evaluate).run()
    return lifecycle.locked(runs, c, work)


def _train_branch(branch, mesh, data_dir, evaluate) -> int:
    """Train a branch's cool-down (tinyscale/train/branches.py) as the run it is."""
    run = branch.rundir
    run.check_workdir()
    lifecycle.check_same_run(run, branch.config)
    if run.state().get("state") == "done":
        return 0
    return lifecycle.locked([run], branch.config,
                   lambda: Trainer([branch.config], [run], mesh, data_dir, evaluate).run())


class Trainer(RunGroup):
    """The loop over K runs (group.py: the runs, their state, its start and saves):
    train, log, measure held-out loss, fork branches, drop a run whose loss is not
    finite, and finish (final evaluation, branches, state). `evaluate`: train()'s."""

    def __init__(self, configs: list, runs: list[RunDir], mesh, data_dir: str, evaluate):
        # where the time goes (goodput.py): each interval is charged to one category
        self.clock = goodput.Attempt(runs, jax.process_index() == 0)
        super().__init__(configs, runs, mesh, data_dir)
        self.evaluate = evaluate

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
                provenance.record(run, step)  # this session's code, versions, devices
        if self.k > 1:
            self.writers[0].message(f"training {self.k} runs as one program: "
                                    f"{', '.join(names)}")
        signals = lifecycle.Signals()  # caught until the final checkpoints are safe
        self.clock.begin(step)
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
                self.clock.charge("checkpoint")
                return EXIT_PREEMPTED
            return self._finish(step, arrays, opt_state, signals)
        finally:  # after an error, the step last logged
            self.clock.close(max(step, self.clock.last_step))
            signals.restore()

    def _loop(self, arrays, opt_state, step, walls, signals):
        """Train until the last step, a signal, no run left or a lost lock; (step, arrays,
        opt_state) at the end."""
        c, clock = self.c, self.clock
        start, pending = time.perf_counter(), None
        tokens_per_step = c.train.batch_size * c.train.seq_len
        last_time, last_step = start, step
        while step < self.total and signals.received is None and any(self.alive) \
                and not any(r.lock_lost() for r in self.runs):
            clock.charge("train")  # the step before (its result is read below)
            batch = packed.batch([d.batch(step) for d in self.train_data], self.mesh)
            clock.charge("data")
            arrays, opt_state, out = self._step(arrays, opt_state, batch)
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
            clock.charge("train")
            self._fork(step, arrays, opt_state)
            if step % c.train.checkpoint_every == 0 or step == self.total:
                self._save(step, arrays, opt_state)
            clock.charge("checkpoint")
            clock.flush(step)
        return step, arrays, opt_state

    def _held_out(self, arrays, i: int) -> dict:
        self.clock.charge("train")  # the step is done: its loss was read
        loss, bpb, se = steps.held_out(self.eval_step, self._slice(arrays, i),
                                       self.eval_data[i], self.c.eval.batches, self.mesh,
                                       self.meta["bytes_per_token"])
        self.clock.charge("eval")
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
        self.clock.charge("train")
        self._save(step, arrays, opt_state)
        self._close_checkpoints()
        self.clock.charge("checkpoint")
        live = [i for i in range(self.k) if self.alive[i]]
        if not live:  # each run failed (non-finite loss) and says so
            return 1
        live_runs, say = [self.runs[i] for i in live], self.writers[0].message
        if signals.received is not None:
            return lifecycle.stopped(live_runs, step, signals.received, "checkpoint saved"
                                     if self.k == 1 else "checkpoints saved", self.lead, say)
        evaluated = all([final_evaluation(
            self.runs[i], step, self._slice(arrays, i), self.c, self.data_dir, self.lead,
            self.writers[i].message, self.evaluate, named=self.k > 1) for i in live])
        self.clock.close(step, "eval")  # each branch is an attempt of its own
        for branch in self.branches:  # each trains its cool-down, then the run is done
            if signals.received is not None:
                return lifecycle.stopped(live_runs, step, signals.received,
                                         "branches left to train", self.lead, say)
            code = _train_branch(branch, self.mesh, self.data_dir, self.evaluate)
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
