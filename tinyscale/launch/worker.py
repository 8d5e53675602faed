"""The worker: train one run of a sweep, or claim runs one after another.

The same code serves every backend: the local launcher runs `--index I [J ...]` (a run,
or a packed group) in a subprocess, a SLURM array task runs the same through `srun`, and
a Cloud TPU VM runs `--slot S` (claim the next unfinished run until none is left).

Several processes of one job (a SLURM task of N processes; a multi-host slice: a v5e-16
has 4 hosts, each running `--slot S`) train the same run together: they join first
(jax.distributed), then process 0 alone picks and locks the run, broadcasts its index to
every process, and all of them train it as one program. One failing ends them all.

A slot's processes each keep a heartbeat, `<sweep>/workers/slot<S>-<HOST>.json` = {host,
pid, started, expires, process, processes, exited}, renewed every `launch.stale_after_s / 4` s
from a thread; the TPU launcher restarts a slot whose heartbeats expired (its workers
died) or ended while runs were left.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback

import jax
import numpy as np
from jax.experimental import multihost_utils

from tinyscale import parallel
from tinyscale.errors import EXIT_USAGE, RESUMABLE, TinyscaleError
from tinyscale.evals import run as evals
from tinyscale.launch.sweepdir import SweepDir, run_config
from tinyscale.storage import write_atomic
from tinyscale.train import trainer
from tinyscale.train.lease import host_id

EXIT_LOCKED = 0  # another process trains this run: nothing to do here


def train_indices(sweep_dir: str, indices: list[int]) -> int:
    """Train runs `indices`: one alone, several as one program (launch.pack,
    tinyscale/train/trainer.py) -- those still runnable and not locked elsewhere.

    The processes of a multi-process job (a SLURM step of several tasks) join before any
    lock is taken; process 0 alone claims the runs and tells the others which it got
    (none: every process exits 0), and all of them train those runs as one program. A
    process whose part fails exits at once (_leave), and so the others end too."""
    sweep = SweepDir(sweep_dir)
    runs = sweep.runs()
    bad = [i for i in indices if not 0 <= i < len(runs)]
    if bad:
        raise TinyscaleError(f"--index {bad[0]} is outside the sweep's 0..{len(runs) - 1}.")
    parallel.initialize_distributed(run_config(runs[indices[0]]).distributed)
    if jax.process_count() == 1:
        return _claim_and_train(sweep, [runs[i] for i in indices])
    try:
        code = _claim_and_train(sweep, [runs[i] for i in indices])
    except TinyscaleError as error:
        print(f"tinyscale: error: {error}", file=sys.stderr)
        code = EXIT_USAGE
    except Exception:
        traceback.print_exc()
        code = 1
    if code not in (0, *RESUMABLE):
        _leave(code)
    return code


def _claim_and_train(sweep: SweepDir, runs: list[dict]) -> int:
    """Process 0 claims what it can of `runs`; every process trains those."""
    lead, many = jax.process_index() == 0, jax.process_count() > 1
    claimed = []
    try:
        if lead:
            claimed = _claim(sweep, runs)
        if many:
            claimed = _share(claimed, len(runs))
        if not claimed:
            return EXIT_LOCKED
        if many:
            names = ", ".join(sweep.runs()[i]["name"] for i in claimed)
            print(f"process {jax.process_index()}/{jax.process_count()} "
                  f"({host_id()}:{os.getpid()}): training {names}", file=sys.stderr, flush=True)
        return _train(sweep, claimed)
    finally:
        if lead:
            for index in claimed:
                sweep.release(sweep.runs()[index]["name"])


def _claim(sweep: SweepDir, runs: list[dict]) -> list[int]:
    """The indices of `runs` this process could lock: runnable and not held elsewhere."""
    claimed = []
    for run in runs:
        config = run_config(run)
        if not sweep.runnable(run, config.launch.max_attempts):
            print(f"{run['name']}: {sweep.rundir(run['name']).state()['state']}, skipped",
                  file=sys.stderr)
        elif not sweep.claim(run["name"], config.launch.stale_after_s):
            print(f"{run['name']}: locked by another process, skipped", file=sys.stderr)
        else:
            claimed.append(run["index"])
    return claimed


def _share(indices: list[int], most: int) -> list[int]:
    """Process 0's `indices` (at most `most`), on every process."""
    padded = np.full(most, -1, np.int32)
    padded[:len(indices)] = indices
    return [int(i) for i in multihost_utils.broadcast_one_to_all(padded) if i >= 0]


def _leave(code: int) -> None:
    """Exit a multi-process job now, skipping JAX's shutdown barrier: after a failure the
    other processes may be dead or stuck in a collective with this one, and the barrier
    would wait up to distributed.shutdown_timeout_s for them. This process leaving ends
    them too (a collective with it fails; the coordination service, process 0's, is gone
    or reports this process dead after distributed.heartbeat_timeout_s). The runs' locks
    are released (process 0's, above) and the checkpoints already saved are whole: a
    relaunch resumes from them."""
    print(f"process {jax.process_index()}/{jax.process_count()}: exit {code}, not waiting "
          "for the other processes", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


def _train(sweep: SweepDir, indices: list[int]) -> int:
    """Train runs `indices` of the sweep as one program (one run: alone)."""
    runs = [sweep.runs()[i] for i in indices]
    rundirs = [sweep.rundir(r["name"]) for r in runs]
    try:
        return trainer.train([run_config(r) for r in runs], [str(d.path) for d in rundirs],
                             evals.evaluate)
    except TinyscaleError:
        raise
    except Exception as error:  # a crash: keep the error on the runs, let the launcher retry
        last = traceback.format_exception_only(error)[-1].strip()
        for rundir in rundirs:
            if rundir.state().get("state") != "done":
                rundir.set_state("failed", last_error=last[:500])
        traceback.print_exc()
        return 1


def _next_run(sweep: SweepDir, slot: int, slots: int, tried: set[int]) -> int:
    """Claim the next unfinished, unlocked run not yet `tried` by this worker (this slot's
    share first); its index or -1."""
    runs = sweep.runs()
    order = [r for r in runs if r["index"] % slots == slot] + \
            [r for r in runs if r["index"] % slots != slot]
    for run in order:
        if run["index"] in tried:
            continue  # once per worker: a crash before training counts no attempt
        config = run_config(run)
        if sweep.runnable(run, config.launch.max_attempts) and \
                sweep.lock_owner(run["name"], config.launch.stale_after_s) is None and \
                sweep.claim(run["name"], config.launch.stale_after_s):
            return run["index"]
    return -1


class Heartbeat:
    """This worker process's heartbeat file, renewed from a daemon thread."""

    def __init__(self, sweep: SweepDir, slot: int, ttl: float):
        self.path = sweep.heartbeat(slot, host_id())
        self.ttl, self._stop = ttl, threading.Event()
        self.record = {"host": host_id(), "pid": os.getpid(), "slot": slot,
                       "started": time.time()}
        self._write()
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")
        self._thread.start()

    def _write(self, **fields) -> None:
        self.record.update(fields, time=time.time(), expires=time.time() + self.ttl)
        try:
            write_atomic(self.path, json.dumps(self.record))
        except Exception:  # a blip: the next beat comes long before the heartbeat expires
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            self._write()

    def update(self, **fields) -> None:
        self._write(**fields)

    def exit(self, code: int) -> None:
        self._stop.set()
        self._thread.join()
        self._write(exited=code)


def work_slot(sweep_dir: str, slot: int, slots: int, coordinator: str = "",
              num_processes: int = 0, process_id: int = -1, tpu: bool = False) -> int:
    """Claim and train unfinished runs until none is left. Several processes of one slot
    (the hosts of a TPU slice, or an explicit coordinator) train each run together."""
    sweep = SweepDir(sweep_dir)
    beat = Heartbeat(sweep, slot, sweep.config(0).launch.stale_after_s)
    code = 1
    try:
        distributed = sweep.config(0).distributed
        distributed.update(coordinator=coordinator, num_processes=num_processes,
                           process_id=process_id)
        parallel.initialize_distributed(distributed, tpu)
        beat.update(process=jax.process_index(), processes=jax.process_count())
        code = _work(sweep, slot, slots)
        return code
    finally:
        beat.exit(code)


def _work(sweep: SweepDir, slot: int, slots: int) -> int:
    lead, tried = jax.process_index() == 0, set()
    while True:
        index = _next_run(sweep, slot, slots, tried) if lead else -1
        if jax.process_count() > 1:
            index = int(multihost_utils.broadcast_one_to_all(np.int32(index)))
        if index < 0:
            return 0
        name = sweep.runs()[index]["name"]
        tried.add(index)
        if lead:
            print(f"slot {slot}: training {name}", file=sys.stderr)
        try:
            code = _train(sweep, [index])
        finally:
            if lead:
                sweep.release(name)
        if code in RESUMABLE:  # preempted or stopped: leave the rest for the relaunch
            return code
