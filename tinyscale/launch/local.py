"""The local backend: train a sweep's runs on this machine, K at a time.

Each run trains in its own `tinyscale sweep worker --index I` process (on a disjoint
set of GPUs, or of CPU cores), which holds the run's lock. Done runs are skipped;
failed ones are retried up to `launch.max_attempts`. Ctrl-C (or SIGTERM) stops every
run with a checkpoint: relaunching resumes them. If the launcher is killed outright,
its workers get SIGTERM from the kernel (PR_SET_PDEATHSIG) and checkpoint too.

With K > 1 the runs start largest first (by training FLOPs), so that the long ones
overlap and the short ones fill the gaps at the end. The launch's window and K are kept
in <sweep>/launches/ (launch/goodput.py: the capacity `sweep status` measures goodput by).
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import signal
import subprocess
import sys
import time

from tinyscale import config as config_lib
from tinyscale.data import location, pipeline
from tinyscale.errors import EXIT_INTERRUPTED, RESUMABLE
from tinyscale.launch import goodput
from tinyscale.launch.sweepdir import SweepDir, run_config
from tinyscale.launch.table import compute
from tinyscale.train import packed

_PR_SET_PDEATHSIG = 1


def _gpu_count() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return out.stdout.count("GPU ")


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS): no parent-death signal
        return None


# loaded here, not in the forked child: a child of a process with threads must not take
# the dynamic loader's lock (another thread may have held it at the fork)
_LIBC = _libc()


def _child_setup(cores):
    def setup():
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if cores:
            os.sched_setaffinity(0, cores)
    return setup


def _device_env(slot: int, parallel: int, gpus: int):
    """(environment, CPU cores) giving worker `slot` its own share of the devices."""
    env = dict(os.environ)
    if gpus and parallel > 1:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in range(gpus)[slot::parallel])
        return env, None
    cores = sorted(os.sched_getaffinity(0))
    return env, (set(cores[slot::parallel]) if parallel > 1 and len(cores) >= parallel else None)


def units(sweep, runs: list[dict], configs: dict) -> list[list[dict]]:
    """What each worker trains: one run, or with launch.pack a group of runs trained as
    one program (tinyscale/train/packed.py), in the order of `runs`. A run that failed before
    is retried alone: a group steps together, and its retry would hold the others back."""
    pack = configs[runs[0]["name"]].launch.pack if runs else 1
    if pack == 1:
        return [[r] for r in runs]
    by_name = {r["name"]: r for r in runs}
    failed = [r for r in runs if sweep.rundir(r["name"]).state().get("state") == "failed"]
    rest = [(r["name"], configs[r["name"]]) for r in runs if r not in failed]
    return [[by_name[n] for n in group] for group in packed.groups(rest, pack)] + \
        [[r] for r in failed]


def _ready(sweep, run: dict, config, active: dict, finished: set) -> bool:
    name = run["name"]
    return not any(name in names for names in active) and name not in finished and \
        sweep.runnable(run, config.launch.max_attempts) and \
        not sweep.lock_owner(name, config.launch.stale_after_s)


def _held_elsewhere(sweep, runs: list[dict], configs: dict) -> list:
    """(name, lock owner) of each unfinished run that another process holds, such as a
    killed launcher's worker still saving its checkpoint: this launcher waits for them
    (then trains those that are not done, if it has not tried them already)."""
    held = []
    for run in runs:
        name, config = run["name"], configs[run["name"]]
        if sweep.runnable(run, config.launch.max_attempts):
            owner = sweep.lock_owner(name, config.launch.stale_after_s)
            if owner:
                held.append((name, owner))
    return held


def _report(sweep, name: str, code: int, stopping, finished: set, began: float, say) -> None:
    state = sweep.rundir(name).state()
    if state.get("state") == "done":
        finished.add(name)
        say(f"{name}: done in {time.time() - began:.0f} s")
    elif code in RESUMABLE or stopping:
        say(f"{name}: stopped at step {state.get('step')}, resumable")
    elif state.get("state") == "failed":
        say(f"{name}: failed (attempt {state.get('attempts')}): {state.get('last_error')}")
    else:
        finished.add(name)  # skipped by the worker (locked elsewhere): not started again


def prepare_data(sweep, runs: list[dict], configs: dict, say) -> None:
    """Each corpus the unfinished runs train on, prepared once here before any worker
    starts: two workers, or two SLURM array tasks (launch/slurm.py calls this before
    sbatch), would otherwise each prepare it, at once."""
    seen = set()
    for run in runs:
        config, rundir = configs[run["name"]], sweep.rundir(run["name"])
        where = location.data_dir(config, rundir.sweep_dir)  # as its worker will find it
        if where in seen or rundir.state().get("state") == "done":
            continue
        seen.add(where)
        pipeline.prepare(config, progress=True, sweep_dir=rundir.sweep_dir)


def run_local(sweep_dir: str, parallel: int = 1, say=print) -> int:
    """Train every unfinished run; 0 when all are done, 1 if some failed, 130 if stopped."""
    sweep = SweepDir(sweep_dir)
    runs = sweep.runs()
    gpus = _gpu_count()
    if gpus and parallel > gpus:
        say(f"launch.parallel={parallel} but this machine has {gpus} GPU(s): "
            f"running {gpus} at a time")
        parallel = gpus
    configs = {r["name"]: run_config(r) for r in runs}
    if parallel > 1:
        runs = sorted(runs, key=lambda r: -math.prod(compute(configs[r["name"]])))
    work = units(sweep, runs, configs)
    window = goodput.Launch(sweep.path, "local", parallel)  # the sweep's capacity
    prepare_data(sweep, runs, configs, say)
    window.ready()
    # the sweep's own cache, unless the user's environment names one (or turns it off)
    cache = os.environ.get(config_lib.COMPILATION_CACHE_ENV, str(sweep.compilation_cache))
    active, finished, free = {}, set(), list(range(parallel))
    stopping, waiting = [], []
    old = {s: signal.signal(s, lambda n, f: stopping.append(n))
           for s in (signal.SIGINT, signal.SIGTERM)}
    start = time.time()
    try:
        while True:
            if stopping:
                for proc, *_ in active.values():
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
            else:
                for unit in work:
                    if not free:
                        break
                    todo = [r for r in unit if _ready(sweep, r, configs[r["name"]], active,
                                                      finished)]
                    if not todo:
                        continue
                    slot = free.pop(0)
                    env, cores = _device_env(slot, parallel, gpus)
                    env[config_lib.COMPILATION_CACHE_ENV] = cache
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "tinyscale.cli", "sweep", "worker", sweep_dir,
                         "--index", *[str(r["index"]) for r in todo]],
                        env=env, preexec_fn=_child_setup(cores), stdin=subprocess.DEVNULL)
                    names = tuple(r["name"] for r in todo)
                    active[names] = (proc, slot, time.time())
                    packed = f" packed as one program with {len(todo) - 1} more" \
                        if len(todo) > 1 else ""
                    say(f"[{todo[0]['index'] + 1}/{len(runs)}] {', '.join(names)}: training "
                        f"(slot {slot}){packed}")
            if not active:
                held = [] if stopping else _held_elsewhere(sweep, runs, configs)
                if not held:
                    break
                if held != waiting:  # e.g. a killed launcher's worker, still checkpointing
                    say("waiting for " + "; ".join(f"{name} (held by {owner.get('host')}:"
                                                   f"{owner.get('pid')})" for name, owner in held))
                waiting = held
            time.sleep(0.2)
            window.flush()
            for names, (proc, slot, began) in list(active.items()):
                if proc.poll() is None:
                    continue
                del active[names]
                free.append(slot)
                for name in names:
                    _report(sweep, name, proc.returncode, stopping, finished, began, say)
    finally:
        window.flush(force=True)
        for s, handler in old.items():
            signal.signal(s, handler)
    states = [sweep.rundir(r["name"]).state().get("state") for r in runs]
    say(f"sweep {sweep_dir}: {states.count('done')}/{len(runs)} done, "
        f"{states.count('failed')} failed, in {time.time() - start:.0f} s")
    if stopping:
        return EXIT_INTERRUPTED
    return 0 if states.count("done") == len(runs) else 1
