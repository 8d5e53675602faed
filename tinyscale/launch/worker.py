"""The worker: train one run of a sweep, or claim runs one after another.

The same code serves every backend: the local launcher runs `--index I` in a
subprocess per run, a SLURM array task runs `--index $SLURM_ARRAY_TASK_ID`, and a
Cloud TPU VM runs `--slot S` (claim the next unfinished run until none is left).

On a multi-host slice (a v5e-16 has 4 hosts, each running `--slot S`), the hosts must
train the same run together: process 0 alone picks and locks the next run, broadcasts
its index to every process, and all of them train it as one jax.distributed program.

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
from tinyscale.errors import RESUMABLE, TinyscaleError
from tinyscale.evals import run as evals
from tinyscale.launch.sweepdir import SweepDir, run_config
from tinyscale.storage import write_atomic
from tinyscale.train import trainer
from tinyscale.train.lease import host_id

EXIT_LOCKED = 0  # another process trains this run: nothing to do here


def train_index(sweep_dir: str, index: int) -> int:
    """Train run `index` under its lock; the exit code of the training."""
    sweep = SweepDir(sweep_dir)
    runs = sweep.runs()
    if not 0 <= index < len(runs):
        raise TinyscaleError(f"--index {index} is outside the sweep's 0..{len(runs) - 1}.")
    run, config = runs[index], run_config(runs[index])
    if not sweep.runnable(run, config.launch.max_attempts):
        print(f"{run['name']}: {sweep.rundir(run['name']).state()['state']}, skipped",
              file=sys.stderr)
        return 0
    if not sweep.claim(run["name"], config.launch.stale_after_s):
        print(f"{run['name']}: locked by another process, skipped", file=sys.stderr)
        return EXIT_LOCKED
    try:
        return _train(sweep, [index])
    finally:
        sweep.release(run["name"])


def train_indices(sweep_dir: str, indices: list[int]) -> int:
    """Train runs `indices`: one alone, several as one program (launch.pack,
    tinyscale/train/trainer.py) -- those still runnable and not locked elsewhere."""
    if len(indices) == 1:
        return train_index(sweep_dir, indices[0])
    sweep = SweepDir(sweep_dir)
    runs = sweep.runs()
    bad = [i for i in indices if not 0 <= i < len(runs)]
    if bad:
        raise TinyscaleError(f"--index {bad[0]} is outside the sweep's 0..{len(runs) - 1}.")
    claimed = []
    try:
        for index in indices:
            run, config = runs[index], run_config(runs[index])
            if not sweep.runnable(run, config.launch.max_attempts):
                print(f"{run['name']}: {sweep.rundir(run['name']).state()['state']}, skipped",
                      file=sys.stderr)
            elif not sweep.claim(run["name"], config.launch.stale_after_s):
                print(f"{run['name']}: locked by another process, skipped", file=sys.stderr)
            else:
                claimed.append(index)
        if len(claimed) <= 1:
            return _train(sweep, claimed[:1]) if claimed else 0
        return _train(sweep, claimed)
    finally:
        for index in claimed:
            sweep.release(runs[index]["name"])


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

        parallel.initialize_distributed(coordinator, num_processes, process_id, tpu)
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
