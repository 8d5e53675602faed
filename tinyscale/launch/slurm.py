"""The SLURM backend: one `sbatch --array` job, one array task per run (or per packed
group of runs, launch.pack).

Each task runs `srun python -m tinyscale.cli sweep worker SWEEP_DIR --index I [J ...]`
(the same worker as the local backend) with the sweep's shared compilation cache. A task
may span launch.slurm_nodes hosts x launch.slurm_tasks_per_node processes: they train its
runs as one jax.distributed program (tinyscale/launch/worker.py). Submitting again
submits only the runs that are not done. The sweep's data is prepared by the submitting
process before `sbatch` (launch/local.py:prepare_data), so no two tasks prepare it. The
sweep directory must be on a filesystem every node sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tinyscale import config as config_lib
from tinyscale.errors import TinyscaleError
from tinyscale.launch.local import prepare_data, units
from tinyscale.launch.sweepdir import SweepDir, run_config
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


def render_script(sweep_dir: str, launch, groups: list[list[int]]) -> str:
    """The sbatch script: one array task per group of sweep indices (one run, or a packed
    group), its id the group's first index."""
    sweep_dir = os.path.abspath(sweep_dir)
    logs = os.path.join(sweep_dir, "slurm")
    ids = sorted(min(g) for g in groups)
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name=tinyscale-{os.path.basename(sweep_dir.rstrip('/'))}",
             f"#SBATCH --array={_array(ids)}%{launch.slurm_max_parallel}",
             f"#SBATCH --nodes={launch.slurm_nodes}",
             f"#SBATCH --ntasks-per-node={launch.slurm_tasks_per_node}",
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
              f"export {CACHE}=${{{CACHE}-{os.path.join(sweep_dir, 'jax_cache')}}}"]
    packs = sorted((sorted(g) for g in groups if len(g) > 1), key=min)
    if packs:  # a packed group's task trains all of its runs as one program
        lines += ['case "$SLURM_ARRAY_TASK_ID" in']
        lines += [f"  {g[0]}) indices=\"{' '.join(map(str, g))}\" ;;" for g in packs]
        lines += ['  *) indices="$SLURM_ARRAY_TASK_ID" ;;', "esac"]
        index = "$indices"
    else:
        index = '"$SLURM_ARRAY_TASK_ID"'
    # --kill-on-bad-exit: a task that fails ends its step's other tasks (the processes of
    # one run) at once, rather than leaving them to JAX's heartbeat timeout
    lines.append(f"srun --kill-on-bad-exit=1 {sys.executable} -m tinyscale.cli sweep worker "
                 f"{sweep_dir} --index {index}")
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
    chosen = [r for r in runs if r.index in set(todo)]
    groups = [[r["index"] for r in unit] for unit in units(
        sweep, [{"name": r.name, "index": r.index} for r in chosen],
        {r.name: r.values for r in chosen})]
    script = render_script(sweep_dir, base.launch, groups)
    if dry_run:
        print(script + f"# submit with: sbatch {sweep_dir}/slurm/sweep.sbatch")
        return 0
    submitted = set(todo)
    unfinished = [r for r in sweep.runs() if r["index"] in submitted]
    prepare_data(sweep, unfinished, {r["name"]: run_config(r) for r in unfinished}, say)
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
    jobs.append({"job": job, "indices": todo, "groups": groups})
    with open(jobs_file, "w") as f:
        json.dump(jobs, f)
    packed = f" in {len(groups)} array tasks (launch.pack)" if len(groups) < len(todo) else ""
    say(f"submitted SLURM job {job}: {len(todo)} runs ({_array(todo)}){packed}; "
        f"watch with `tinyscale sweep status {sweep_dir}`")
    return 0


def queue(sweep_dir: str) -> dict[str, str]:
    """{sweep index: SLURM state} of this sweep's runs whose array task is still queued."""
    jobs_file = os.path.join(sweep_dir, "slurm", "jobs.json")
    if not os.path.exists(jobs_file):
        return {}
    jobs = json.load(open(jobs_file))
    groups = {j["job"]: {str(min(g)): g for g in j.get("groups", [])} for j in jobs}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(groups), "-o", "%F %K %T"],
                             capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for line in out.stdout.splitlines():
        if len(line.split()) == 3:
            job, task, state = line.split()
            for index in groups.get(job, {}).get(task, [task]):
                states[str(index)] = state
    return states
