"""`tinyscale sweep status DIR`: one line per run, from the run directories.

The step, tokens and loss are the live ones, from the run's last metrics line (state.json
changes only when a run starts or ends). A running run shows who holds it and the age of
its lease (gs://: seconds since the holder last renewed it; it expires at
launch.stale_after_s) or `flock` (a local lock lives exactly as long as its process).
A run whose state.json says running but whom nobody holds shows `stopped`: its trainer
died, and the next worker resumes it.

The last line is the sweep's goodput (tinyscale/launch/goodput.py): the share of its
capacity (the launches' windows x their slots) spent on training steps that were kept,
and where the rest went."""

from __future__ import annotations

import time

from tinyscale.launch import goodput, slurm
from tinyscale.launch.sweepdir import SweepDir, run_config
from tinyscale.launch.table import si
from tinyscale.storage import is_remote


def render(sweep_dir: str) -> str:
    sweep = SweepDir(sweep_dir)
    lines = [f"{'run':<22} {'state':<8} {'step':>13} {'tokens':>7} {'loss':>7} {'tok/s':>8} "
             f"{'attempts':>8} {'lease':>6}  holder / error"]
    counts = {}
    queued = {}
    if not is_remote(sweep_dir):
        queued = slurm.queue(sweep_dir)
    for run in sweep.runs():
        rundir = sweep.rundir(run["name"])
        state = rundir.state()
        metrics = rundir.read_metrics()
        last = metrics[-1] if metrics else {}
        counts[state["state"]] = counts.get(state["state"], 0) + 1
        stale_after_s = run_config(run).launch.stale_after_s
        owner = sweep.lock_owner(run["name"], stale_after_s)
        lease, note = "", state.get("last_error") or ""
        if state["state"] == "running" and not owner:  # its trainer died: resumable
            state["state"] = "stopped"
        if owner and state["state"] != "done":
            state["state"] = "running"
            lease = "flock" if not is_remote(sweep_dir) else \
                f"{time.time() - owner.get('time', time.time()):.0f}s"
            note = f"{owner.get('host')}:{owner.get('pid')}"
        if str(run["index"]) in queued and state["state"] != "done":
            state["state"] = queued[str(run["index"])].lower()[:8]
        total = state.get("total_steps", "?")
        step = max(state.get("step") or 0, last.get("step", 0))
        lines.append(
            f"{run['name']:<22} {state['state']:<8} {step:>6}/{total:<6} "
            f"{si(last.get('tokens', 0)):>7} "
            f"{last.get('train_loss', float('nan')):>7.3f} {last.get('tokens_per_s', 0):>8.0f} "
            f"{state.get('attempts', 0):>8} {lease:>6}  {note[:60]}")
    lines.append(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    summary = goodput.sweep_summary(sweep.path, [r["name"] for r in sweep.runs()])
    slurm_jobs = not is_remote(sweep_dir) and (sweep.path / "slurm" / "jobs.json").exists()
    lines.append(goodput.describe(summary, "SLURM jobs, whose time queued is not recorded"
                                  if slurm_jobs else "trained outside `sweep run`"))
    return "\n".join(lines)
