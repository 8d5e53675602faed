"""The SLURM backend: one `sbatch --array` job, one sweep index per array task.

Each task runs `srun python -m tinyscale.cli sweep worker SWEEP_DIR --index
$SLURM_ARRAY_TASK_ID` (the same worker as the local backend) with the sweep's shared
compilation cache. Submitting again submits only the runs that are not done. The
sweep directory must be on a filesystem every node sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tinyscale import config as config_lib
from tinyscale.errors import TinyscaleError
from tinyscale.launch.sweepdir import SweepDir
from tinyscale.storage import is_remote

CACHE = config_lib.COMPILATION_CACHE_ENV


def _array(indices: list[int]) -> str:
    """'0-3,7,9-10' for [0, 1, 2, 3, 7, 9, 10]."""
    parts, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            parts.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return ",".join(parts)


def render_script(sweep_dir: str, launch, indices: list[int]) -> str:
    sweep_dir = os.path.abspath(sweep_dir)
    logs = os.path.join(sweep_dir, "slurm")
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name=tinyscale-{os.path.basename(sweep_dir.rstrip('/'))}",
             f"#SBATCH --array={_array(indices)}%{launch.slurm_max_parallel}",
             f"#SBATCH --cpus-per-task={launch.slurm_cpus}",
             f"#SBATCH --time={launch.slurm_time}",
             f"#SBATCH --output={logs}/%A_%a.out"]
    if launch.slurm_partition:
        lines.append(f"#SBATCH --partition={launch.slurm_partition}")
    if launch.slurm_gpus:
        lines.append(f"#SBATCH --gpus-per-task={launch.slurm_gpus}")
    lines += [f"#SBATCH {x.strip()}" for x in launch.slurm_extra.split(";") if x.strip()]
    lines += ["set -euo pipefail",
              # the sweep's cache unless the submitting environment names one
              f"export {CACHE}=${{{CACHE}-{os.path.join(sweep_dir, 'jax_cache')}}}",
              f"srun {sys.executable} -m tinyscale.cli sweep worker {sweep_dir} "
              "--index \"$SLURM_ARRAY_TASK_ID\""]
    return "\n".join(lines) + "\n"


def submit(sweep_dir: str, base, runs, dry_run: bool, say=print) -> int:
    if is_remote(sweep_dir):
        raise TinyscaleError("the slurm backend needs a shared filesystem path for "
                             "--sweep-dir, not gs://.")
    sweep = SweepDir(sweep_dir)
    todo, held = [], []
    for r in runs:
        launch = r.values.launch
        if dry_run or sweep.runnable({"name": r.name}, launch.max_attempts):
            live = not dry_run and sweep.lock_owner(r.name, launch.stale_after_s)
            (held if live else todo).append(r.index)
    if held:  # a resubmit never starts a second trainer of a run
        say(f"not submitted: {len(held)} run(s) being trained now (their lock is held)")
    if not todo:
        say(f"{sweep_dir}: every run is done or running; nothing to submit.")
        return 0
    script = render_script(sweep_dir, base.launch, todo)
    if dry_run:
        print(script + f"# submit with: sbatch {sweep_dir}/slurm/sweep.sbatch")
        return 0
    os.makedirs(os.path.join(sweep_dir, "slurm"), exist_ok=True)
    path = os.path.join(sweep_dir, "slurm", "sweep.sbatch")
    with open(path, "w") as f:
        f.write(script)
    try:
        out = subprocess.run(["sbatch", "--parsable", path], capture_output=True, text=True)
    except FileNotFoundError:
        raise TinyscaleError("sbatch is not on PATH: run on a SLURM login node, or use "
                             "--backend local.") from None
    if out.returncode:
        raise TinyscaleError(f"sbatch refused the job: {out.stderr.strip()}")
    job = out.stdout.strip().split(";")[0]
    jobs_file = os.path.join(sweep_dir, "slurm", "jobs.json")
    jobs = json.load(open(jobs_file)) if os.path.exists(jobs_file) else []
    jobs.append({"job": job, "indices": todo})
    with open(jobs_file, "w") as f:
        json.dump(jobs, f)
    say(f"submitted SLURM job {job}: {len(todo)} runs ({_array(todo)}); "
        f"watch with `tinyscale sweep status {sweep_dir}`")
    return 0


def queue(sweep_dir: str) -> dict[str, str]:
    """{array task index: SLURM state} of this sweep's jobs still in the queue."""
    jobs_file = os.path.join(sweep_dir, "slurm", "jobs.json")
    if not os.path.exists(jobs_file):
        return {}
    ids = ",".join(j["job"] for j in json.load(open(jobs_file)))
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-j", ids, "-o", "%K %T"],
                             capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return {}
    return dict(line.split(None, 1) for line in out.stdout.splitlines() if " " in line)
