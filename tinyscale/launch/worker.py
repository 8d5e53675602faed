"""The worker: train one run of a sweep, or claim runs one after another.

The same code serves every backend: the local launcher runs `--index I` in a
subprocess per run, a SLURM array task runs `--index $SLURM_ARRAY_TASK_ID`, and a
Cloud TPU VM runs `--slot S` (claim the next unfinished run until none is left).
"""

from __future__ import annotations

import sys
import traceback

from tinyscale.errors import TinyscaleError
from tinyscale.launch.sweepdir import SweepDir

EXIT_LOCKED = 0  # another process trains this run: nothing to do here


def runnable(sweep: SweepDir, run: dict, max_attempts: int) -> bool:
    state = sweep.rundir(run["name"]).state()
    return state.get("state") != "done" and not (
        state.get("state") == "failed" and state.get("attempts", 0) >= max_attempts)


def train_index(sweep_dir: str, index: int) -> int:
    """Train run `index` under its lock; the exit code of the training."""
    from tinyscale import train
    sweep = SweepDir(sweep_dir)
    runs = sweep.runs()
    if not 0 <= index < len(runs):
        raise TinyscaleError(f"--index {index} is outside the sweep's 0..{len(runs) - 1}.")
    run, config = runs[index], sweep.config(index)
    if not runnable(sweep, run, config.launch.max_attempts):
        print(f"{run['name']}: {sweep.rundir(run['name']).state()['state']}, skipped",
              file=sys.stderr)
        return 0
    if not sweep.claim(run["name"], config.launch.stale_after_s):
        print(f"{run['name']}: locked by another process, skipped", file=sys.stderr)
        return EXIT_LOCKED
    rundir = sweep.rundir(run["name"])
    try:
        return train.main(config, str(rundir.path))
    except TinyscaleError:
        raise
    except Exception as error:  # a crash: keep the error on the run, let the launcher retry
        last = traceback.format_exception_only(error)[-1].strip()
        rundir.set_state("failed", last_error=last[:500])
        traceback.print_exc()
        return 1
    finally:
        sweep.release(run["name"])


def work_slot(sweep_dir: str, slot: int, slots: int) -> int:
    """Claim and train unfinished runs (this slot's share first) until none is left."""
    sweep = SweepDir(sweep_dir)
    runs = sweep.runs()
    order = [r for r in runs if r["index"] % slots == slot] + \
            [r for r in runs if r["index"] % slots != slot]
    for run in order:
        config = sweep.config(run["index"])
        if runnable(sweep, run, config.launch.max_attempts) and \
                sweep.lock_owner(run["name"], config.launch.stale_after_s) is None:
            code = train_index(sweep_dir, run["index"])
            if code in (75, 130):  # preempted or stopped: leave the rest for the relaunch
                return code
    return 0
