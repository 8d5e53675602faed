"""The training loop: resumable, sharded, and honest about interruptions.

Starting a run whose workdir holds checkpoints resumes it (parameters, optimizer and
data position: batches are a pure function of the step). SIGTERM or SIGINT saves a
checkpoint and exits with EXIT_PREEMPTED (EXIT_INTERRUPTED for Ctrl-C); a second
signal while it saves changes nothing. A non-finite loss marks the run failed and exits
1; a full disk marks it failed with one line. The trainer holds the run's lock: a second
trainer of the same workdir is refused. Metrics are read one step late, so the host
never waits for the step it just dispatched.
"""

from __future__ import annotations

import errno
import math
import os
import re
import signal
import sys
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from tinyscale import config as config_lib
from tinyscale import parallel
from tinyscale.data import pipeline
from tinyscale.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED, TinyscaleError
from tinyscale.model import counting
from tinyscale.model.transformer import ModelSpec
from tinyscale.train import branches, checkpoint, distill, metrics, optim, steps
from tinyscale.train.lease import host_id
from tinyscale.train.rundir import RunDir, is_remote

_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _check_same_run(run: RunDir, config) -> None:
    """Refuse a workdir that holds another run: its checkpoints would be overwritten."""
    old = run.read_json(run.config)
    if old is None:
        return
    old = config_lib.from_saved(old).to_dict()  # knobs added since get their defaults
    new = config.to_dict()
    for section in sorted(set(old) | set(new)):
        if section in ("output", "distributed"):
            continue
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            key = f"{section}.{diffs[0]}" if diffs else None
            was, now = (a.get(diffs[0]), b.get(diffs[0])) if diffs else (None, None)
        else:
            key, was, now = (section, a, b) if a != b else (None, None, None)
        if key:
            raise TinyscaleError(
                f"{run.path} holds a run with config.{key}={was!r}, not {now!r}: use a new "
                "--workdir, or the same config to resume it.")


class _Signals:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step."""

    def __init__(self):
        self.received = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame):
        if self.received is None:  # the first signal decides; repeats change nothing
            self.received = signum

    def restore(self):
        for s, handler in self._old.items():
            signal.signal(s, handler)


def main(config, workdir: str) -> int:
    """Train (or resume) the run in `workdir`; the process exit code.

    `config` is validated where it was made (config_file.resolve, plan.expand)."""
    config.output.workdir = str(workdir)
    distill.check(config)
    if config.data.dataset == "generated":  # before the run directory is made
        from tinyscale.data import generated
        generated.check_dir(os.path.expanduser(config.data.dir))
    run = RunDir(workdir)
    run.check_workdir()
    _check_same_run(run, config)
    if run.state().get("state") == "done":
        print(f"{workdir}: already done ({run.state().get('step')} steps).", file=sys.stderr)
        return 0
    d = config.distributed
    parallel.initialize_distributed(d.coordinator, d.num_processes, d.process_id)

    mesh = parallel.make_mesh(config)  # a model the mesh cannot shard: before any write

    def train():
        data_dir = pipeline.prepare(config, progress=jax.process_index() == 0,
                                    sweep_dir=run.sweep_dir)
        return Trainer(config, run, mesh, data_dir).run()
    return _locked(run, config, train)


def _train_branch(branch, mesh, data_dir) -> int:
    """Train a branch's cool-down (tinyscale/train/branches.py) as the run it is."""
    run = branch.rundir
    run.check_workdir()
    _check_same_run(run, branch.config)
    if run.state().get("state") == "done":
        return 0
    return _locked(run, branch.config,
                   lambda: Trainer(branch.config, run, mesh, data_dir).run())


def _locked(run: RunDir, config, train) -> int:
    """`train()` holding the run's lock; an error never leaves the run 'running'."""
    lead = jax.process_index() == 0
    if lead and not run.acquire(config.launch.stale_after_s):
        owner = run.lock_owner(config.launch.stale_after_s) or {}
        raise TinyscaleError(f"{run.path} is being trained by pid {owner.get('pid')} on "
                             f"{owner.get('host')}: wait for it to finish or stop it; a "
                             "second trainer would write the same checkpoints.")
    try:
        return train()
    except Exception as error:
        full = _disk_full(error)
        if lead and run.state().get("state") == "running":  # never leave it running
            failed = full or not isinstance(error, TinyscaleError)
            _set_state_quietly(run, "failed" if failed else "pending",
                               last_error=full or _one_line(error))
        if full:
            raise TinyscaleError(f"{full}: free space (or raise the file-size limit) and run "
                                 "the same command again; it resumes from the newest "
                                 "checkpoint.") from None
        raise
    finally:
        if lead:
            run.release()


def _disk_full(error: BaseException) -> str:
    """'ENOSPC writing PATH: the disk is full' when `error` is a full disk (an OSError, or
    orbax/tensorstore's ValueError naming the OS error code); else ''."""
    code = getattr(error, "errno", None)
    if code is None:
        found = re.search(r"os_error_code='?(\d+)", str(error))
        code = int(found.group(1)) if found else None
    if code not in _DISK_FULL:
        return ""
    where = getattr(error, "filename", None) or ""
    return f"{errno.errorcode[code]}{' writing ' + where if where else ''}: the disk is full"


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"


def _set_state_quietly(run: RunDir, state: str, **fields) -> None:
    try:  # on a full disk even this may fail; the lock and the exit code still say it
        run.set_state(state, **fields)
    except OSError:
        pass


class Trainer:
    def __init__(self, c, run: RunDir, mesh, data_dir: str):
        self.c, self.rundir, self.mesh, self.data_dir = c, run, mesh, data_dir
        self.meta = pipeline.load_meta(data_dir)
        self.spec = ModelSpec.from_config(c.model, self.meta["vocab_size"])
        self.total = config_lib.total_steps(c)
        self.lead = jax.process_index() == 0
        self.worker = f"{host_id()}:{os.getpid()}"  # who trained each logged step
        t = c.train
        args = (t.seq_len, t.batch_size, c.seed, jax.process_index(), jax.process_count())
        self.train_data = pipeline.Batches(data_dir, "train", *args)
        self.eval_data = pipeline.Batches(data_dir, "eval", *args)
        self.params = steps.Params(self.spec, mesh, c.seed)
        self.tx = optim.optimizer(t, self.total)
        self.schedule = optim.schedule(t, self.total)
        self.teacher = distill.load(c, mesh, self.meta)
        self.train_step = steps.make_train_step(self.params, self.tx, t.grad_accum,
                                                self.teacher)
        self.eval_step = steps.make_eval_step(self.params)
        # what the step computes: a teacher's forward pass too
        self.flops_per_token = counting.flops_per_token(self.spec, t.seq_len) + (
            self.teacher.flops_per_token if self.teacher else 0.0)
        self.branches = branches.of(c)
        self.forks = {b.fork: [x for x in self.branches if x.fork == b.fork]
                      for b in self.branches}
        self.peak = metrics.peak_flops(c.output.peak_flops)
        wandb = metrics.wandb_run(run, c.output, c.to_dict()) \
            if self.lead and c.output.wandb else None
        self.writer = metrics.MetricsWriter(run, self.total, self.lead, c.output.tensorboard,
                                            c.output.progress, wandb)
        self.ckpt = checkpoint.Checkpoints(run.checkpoints if is_remote(run.path)
                                           else run.checkpoints.resolve(), t.keep_checkpoints)

    def _batch(self, rows: np.ndarray) -> jax.Array:
        return parallel.global_batch(rows, self.mesh)

    def evaluate(self, arrays) -> dict:
        loss, bpb, se = steps.held_out(self.eval_step, arrays, self.eval_data,
                                       self.c.eval.batches, self.mesh,
                                       self.meta["bytes_per_token"])
        return {"eval_loss": loss, "eval_loss_se": se, "eval_bpb": bpb}

    def _start(self):
        """(arrays, opt_state, step, wall seconds so far), restored when possible."""
        arrays = self.params.initial
        with jax.set_mesh(self.mesh):
            opt_state = self.tx.init(arrays)
        state = {"params": arrays, "opt_state": opt_state}
        step, restored = self.ckpt.restore_good(state, say=self.writer.message)
        if step is None:
            if self.lead:
                self.rundir.write_json(self.rundir.config, self.c.to_dict())
                self.rundir.truncate_metrics(0)  # lines of an attempt killed before a save
            return arrays, opt_state, 0, 0.0
        state = restored
        past = [m for m in self.rundir.read_metrics() if m["step"] <= step]
        if self.lead:
            self.rundir.truncate_metrics(step)
            self.writer.message(f"resuming {self.rundir.path} from step {step}")
        return state["params"], state["opt_state"], step, past[-1]["wall_s"] if past else 0.0

    def run(self) -> int:
        arrays, opt_state, step, wall_before = self._start()
        self._fork(step, arrays, opt_state)  # restored at a fork step: fork if not yet
        attempts = self.rundir.state().get("attempts", 0) + 1
        if self.lead:
            self.rundir.set_state("running", attempts=attempts, step=step, total_steps=self.total,
                                  cores=sorted(os.sched_getaffinity(0)))
        signals = _Signals()  # caught until the final checkpoint is safe
        try:
            try:
                step = self._loop(arrays, opt_state, step, wall_before, signals)
            except FloatingPointError as error:
                self.ckpt.wait()
                self.ckpt.close()
                if self.lead:
                    self.rundir.set_state("failed", step=error.args[1],
                                          last_error=error.args[0])
                self.writer.message(f"{self.rundir.path}: {error.args[0]}")
                return 1
            finally:
                self.writer.close()
            if self.rundir.lock_lost():  # another host holds the run now: write nothing more
                self.writer.message(f"{self.rundir.path}: lost the run's lease (it expired and "
                                    "another worker took over); stopping without a save")
                # a save begun while the lease was ours completes (an orbax save is
                # atomic, and deterministic: the new holder may use it); an unclosed
                # manager would hold the process at exit for minutes
                self.ckpt.wait()
                self.ckpt.close()
                return EXIT_PREEMPTED
            return self._finish(*step, signals)
        finally:
            signals.restore()

    def _loop(self, arrays, opt_state, step, wall_before, signals):
        """Train until the last step or a signal; (step, arrays, opt_state) at the end."""
        start, pending = time.perf_counter(), None
        tokens_per_step = self.c.train.batch_size * self.c.train.seq_len
        last_time, last_step = start, step
        while step < self.total and signals.received is None and not self.rundir.lock_lost():
            batch = self._batch(self.train_data.batch(step))
            arrays, opt_state, out = self.train_step(arrays, opt_state, batch)
            step += 1
            if pending is not None:
                self._check_finite(*pending)
            pending = (step, out)
            if step % self.c.train.log_every and step % self.c.eval.every \
                    and step % self.c.train.checkpoint_every and step != self.total \
                    and step not in self.forks:
                continue
            self._check_finite(*pending)
            now = time.perf_counter()
            rate = (step - last_step) * tokens_per_step / max(now - last_time, 1e-9)
            last_time, last_step = now, step
            record = {"step": step, "tokens": step * tokens_per_step,
                      "train_loss": float(out["loss"]), "grad_norm": float(out["grad_norm"]),
                      "lr": float(self.schedule(step - 1)), "tokens_per_s": rate,
                      "mfu": rate * self.flops_per_token / self.peak,
                      "wall_s": wall_before + now - start, "worker": self.worker,
                      **metrics.router(out),
                      **({"distill_kl": float(out["distill_kl"])} if "distill_kl" in out
                         else {})}
            if step % self.c.eval.every == 0 or step == self.total:
                record.update(self.evaluate(arrays))
            self.writer.write(record)
            self._fork(step, arrays, opt_state)
            if step % self.c.train.checkpoint_every == 0 or step == self.total:
                self.ckpt.save(step, {"params": arrays, "opt_state": opt_state})
        return step, arrays, opt_state

    def _fork(self, step: int, arrays, opt_state) -> None:
        """At a branch's fork step, its first checkpoint (before the run's own save)."""
        for branch in self.forks.get(step, ()):
            if branches.fork(branch, step, {"params": arrays, "opt_state": opt_state},
                             self.rundir, self.lead):
                self.writer.message(f"step {step}: forked the {branch.tokens:,}-token "
                                    f"branch into {branch.rundir.path}")

    def _check_finite(self, step: int, out) -> None:
        loss = float(out["loss"])
        if not math.isfinite(loss):
            raise FloatingPointError(f"non-finite loss ({loss}) at step {step}", step)

    def _evaluate(self, step: int, host_arrays: dict | None = None) -> bool:
        """The full evaluation; a failure is kept on the run, not lost with it.
        `host_arrays`: the final parameters in host memory (multi-host: evaluated on
        this process's own devices, not read back from the checkpoint)."""
        from tinyscale.evals import run as evals
        from tinyscale.train import trained
        self.writer.message("evaluating story completions...")
        try:
            workdir = str(self.rundir.path)
            loaded = None if host_arrays is None else trained.on_local_devices(
                workdir, step, host_arrays, self.data_dir)
            result = evals.evaluate(workdir, step, say=self.writer.message, loaded=loaded)
        except Exception as error:  # the model is trained: keep it done, say why no eval
            self.rundir.write_json(self.rundir.eval, {"step": step, "error": repr(error)})
            self.writer.message(f"evaluation failed: {error}; the model is trained and kept: "
                                "fix that, then run `tinyscale eval` on the run")
            return False
        self.writer.message(f"coherence {result['coherence']:.3f}  grammar "
                            f"{result['grammar']:.3f}  consistency {result['consistency']:.3f}")
        return True

    def _finish(self, step, arrays, opt_state, signals) -> int:
        if self.ckpt.latest_step() != step:
            self.ckpt.save(step, {"params": arrays, "opt_state": opt_state})
        self.ckpt.wait()
        self.ckpt.close()
        if signals.received is not None:
            return self._stopped(step, signals.received, "checkpoint saved")
        evaluated = self._final_evaluation(step, arrays)
        for branch in self.branches:  # each trains its cool-down, then the run is done
            if signals.received is not None:
                return self._stopped(step, signals.received, "branches left to train")
            code = _train_branch(branch, self.mesh, self.data_dir)
            state = branch.rundir.state()
            if code in (EXIT_PREEMPTED, EXIT_INTERRUPTED):
                if self.lead:
                    self.rundir.set_state("pending", step=step, last_error=state.get(
                        "last_error") or f"the {branch.tokens}-token branch stopped")
                return code
            if state.get("state") != "done":
                if self.lead:
                    self.rundir.set_state("failed", step=step, last_error=f"the "
                                          f"{branch.tokens}-token branch failed: "
                                          f"{state.get('last_error')}")
                return 1
            evaluated = evaluated and code == 0
        if self.lead:
            final = self.rundir.read_metrics()[-1]
            self.rundir.set_state("done", step=step, last_error=None)
            self.writer.message(f"{self.rundir.path}: done, {step} steps, eval loss "
                                f"{final.get('eval_loss'):.4f}"
                                + (f", {len(self.branches)} branches" if self.branches else ""))
        return 0 if evaluated else 1

    def _stopped(self, step: int, signum: int, what: str) -> int:
        name = signal.Signals(signum).name
        if self.lead:
            self.rundir.set_state("pending", step=step, last_error=f"{name} at step {step}")
        self.writer.message(f"{name}: {what} at step {step}; run again to resume.")
        return EXIT_PREEMPTED if signum == signal.SIGTERM else EXIT_INTERRUPTED

    def _final_evaluation(self, step: int, arrays) -> bool:
        """eval.json for the final step (kept if a run stopped in its branches has it)."""
        done = self.rundir.read_json(self.rundir.eval) or {}
        if done.get("step") == step and "error" not in done:
            return True
        evaluated, many = True, jax.process_count() > 1
        # Several hosts: every one hands process 0 the final parameters, which it then
        # evaluates alone on its own devices while the others wait at a barrier.
        host_arrays = multihost_utils.process_allgather(arrays, tiled=True) \
            if many and self.c.eval.at_end else None
        if self.lead:
            final = self.rundir.read_metrics()[-1]
            if self.c.eval.at_end:
                evaluated = self._evaluate(step, host_arrays)
            else:
                self.rundir.write_json(self.rundir.eval, {
                    "step": step, "loss": final.get("eval_loss"),
                    "loss_se": final.get("eval_loss_se"), "bits_per_byte": final.get("eval_bpb")})
        parallel.barrier(f"evaluated-{self.rundir.path}-{step}")
        return evaluated
