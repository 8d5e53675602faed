"""The local backend: train a sweep's runs on this machine, K at a time.

Each run trains in its own `tinyscale sweep worker --index I` process (on a disjoint
set of GPUs, or of CPU cores), which holds the run's lock. Done runs are skipped;
failed ones are retried up to `launch.max_attempts`. Ctrl-C (or SIGTERM) stops every
run with a checkpoint: relaunching resumes them. If the launcher is killed outright,
its workers get SIGTERM from the kernel (PR_SET_PDEATHSIG) and checkpoint too.

With K > 1 the runs start largest first (by training FLOPs), so that the long ones
overlap and the short ones fill the gaps at the end.
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

from tinyscale.errors import EXIT_INTERRUPTED, RESUMABLE
from tinyscale.launch.sweepdir import SweepDir, run_config
from tinyscale.launch.table import compute

_PR_SET_PDEATHSIG = 1


def _gpu_count() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return out.stdout.count("GPU ")


def _child_setup(cores):
    def setup():
        try:
            ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass
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
    cache = str(sweep.compilation_cache)
    active, finished, free = {}, set(), list(range(parallel))
    stopping = []
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
                for run in runs:
                    if not free:
                        break
                    config = configs[run["name"]]
                    if run["name"] in active or run["name"] in finished or not sweep.runnable(
                            run, config.launch.max_attempts) or sweep.lock_owner(
                            run["name"], config.launch.stale_after_s):
                        continue
                    slot = free.pop(0)
                    env, cores = _device_env(slot, parallel, gpus)
                    env["TINYSCALE_COMPILATION_CACHE"] = cache
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "tinyscale.cli", "sweep", "worker", sweep_dir,
                         "--index", str(run["index"])],
                        env=env, preexec_fn=_child_setup(cores), stdin=subprocess.DEVNULL)
                    active[run["name"]] = (proc, slot, time.time())
                    say(f"[{run['index'] + 1}/{len(runs)}] {run['name']}: training "
                        f"(slot {slot})")
            if not active:
                break
            time.sleep(0.2)
            for name, (proc, slot, began) in list(active.items()):
                if proc.poll() is None:
                    continue
                del active[name]
                free.append(slot)
                state = sweep.rundir(name).state()
                if state.get("state") == "done":
                    finished.add(name)
                    say(f"{name}: done in {time.time() - began:.0f} s")
                elif proc.returncode in RESUMABLE or stopping:
                    say(f"{name}: stopped at step {state.get('step')}, resumable")
                elif state.get("state") == "failed":
                    say(f"{name}: failed (attempt {state.get('attempts')}): "
                        f"{state.get('last_error')}")
                else:
                    finished.add(name)  # skipped by the worker (locked elsewhere)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    states = [sweep.rundir(r["name"]).state().get("state") for r in runs]
    say(f"sweep {sweep_dir}: {states.count('done')}/{len(runs)} done, "
        f"{states.count('failed')} failed, in {time.time() - start:.0f} s")
    if stopping:
        return EXIT_INTERRUPTED
    return 0 if states.count("done") == len(runs) else 1
