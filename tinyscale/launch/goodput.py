"""Goodput of a sweep: its capacity, where it went, and the line `sweep status` prints.

Capacity is the launchers' windows times their slots: each launch (local, TPU) keeps
`<sweep>/launches/<start>-<host>-<pid>.json` = {backend, slots, start, ready (its first
worker could start), end (rewritten while it lives, so a killed launcher's window ends
at its last sign of life)}. Attempts outside every window (a plain `tinyscale train`, a
SLURM job) add their own wall time, with no idle time known for it. Idle is capacity
less the attempts' wall time (tinyscale/train/goodput.py): slots with no worker
training -- a slice being created or set up, a worker starting. The launcher's own
set-up before its first worker (preparing the data) counts as startup. Goodput =
(train - lost) / capacity.
"""

from __future__ import annotations

import json
import os
import time

from tinyscale.storage import write_atomic
from tinyscale.train import branches
from tinyscale.train.goodput import CATEGORIES, read, run_summary
from tinyscale.train.lease import host_id
from tinyscale.train.rundir import RunDir

LAUNCHES = "launches"  # <sweep>/launches/<start>-<host>-<pid>.json, one per launch
# what each share is called in `describe`, in its order
SHOWN = {"train": "training", "compile": "compile", "eval": "eval", "data": "data",
         "checkpoint": "checkpoints", "startup": "startup", "lost": "lost", "idle": "idle"}


def _union(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(w for w in windows if w[1] > w[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def outside(start: float, end: float, windows: list[tuple[float, float]]) -> float:
    """The share of [start, end] that no window covers."""
    if end <= start:
        return 0.0
    covered = sum(max(0.0, min(end, e) - max(start, s)) for s, e in _union(windows))
    return max(0.0, 1 - covered / (end - start))


def summarize(attempts_by_run: list[list[dict]], launches: list[dict]) -> dict:
    """A sweep's seconds by category (CATEGORIES, lost, idle) over `capacity`: the
    launches' windows times their slots, plus the wall time of attempts outside every
    window (a `tinyscale train`, a SLURM job: no idle is known there, `unrecorded` says
    how much). Launch setup before the first worker (preparing the data) is startup."""
    out = dict.fromkeys(CATEGORIES, 0.0)
    out.update(lost=0.0, lost_steps=0, wall=0.0, attempts=0)
    windows = [(x["start"], x["end"]) for x in launches]
    unrecorded = 0.0
    for attempts in attempts_by_run:
        run = run_summary(attempts)
        for key in (*CATEGORIES, "lost", "lost_steps", "wall", "attempts"):
            out[key] += run[key]
        unrecorded += sum(a["wall_s"] * outside(a["start"], a["end"], windows)
                          for a in attempts)
    setup = sum(x["slots"] * max(0.0, min(x.get("ready") or x["start"], x["end"]) - x["start"])
                for x in launches)
    slot_time = sum(x["slots"] * max(0.0, x["end"] - x["start"]) for x in launches)
    out["startup"] += setup
    out["idle"] = max(0.0, slot_time - setup - (out["wall"] - unrecorded))
    out["capacity"] = sum(out[c] for c in (*CATEGORIES, "idle"))
    out.update(unrecorded=unrecorded, slot_time=slot_time,
               slots=sorted({x["slots"] for x in launches}),
               window=sum(max(0.0, x["end"] - x["start"]) for x in launches))
    out["goodput"] = (out["train"] - out["lost"]) / out["capacity"] if out["capacity"] \
        else 0.0
    return out


def shares(summary: dict) -> dict:
    """{SHOWN name: share of capacity}: training is net of lost, so the shares sum to 1."""
    total = summary["capacity"] or 1.0
    seconds = {**summary, "train": summary["train"] - summary["lost"]}
    return {name: seconds[key] / total for key, name in SHOWN.items()}


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def describe(summary: dict, unrecorded: str = "trained outside `sweep run`") -> str:
    """One line: goodput, of what capacity, and where the rest went. `unrecorded` says
    why some time has no launch window (so no idle time is known for it)."""
    if not summary["attempts"]:
        return "goodput: nothing trained yet"
    if len(summary["slots"]) == 1:
        slots = summary["slots"][0]
        of = f"{slots} slot{'s' * (slots != 1)} x {duration(summary['window'])}"
    elif summary["slots"]:
        of = f"{duration(summary['slot_time'])} of slot time"
    else:
        of = f"{duration(summary['capacity'])} of training processes"
    if summary["slots"] and summary["unrecorded"] > 1:
        of += f" + {duration(summary['unrecorded'])} outside them"
    parts = ", ".join(f"{name} {share:.0%}" for name, share in shares(summary).items()
                      if name != "idle" or summary["slots"])
    note = f" ({unrecorded}: idle not known)" if summary["unrecorded"] > 1 else ""
    return f"goodput {summary['goodput']:.0%} of {of}: {parts}{note}"


# ---- a sweep's records ----------------------------------------------------------------

def run_dirs(sweep_path, names: list[str]) -> list[RunDir]:
    """The run directories of a sweep's runs `names` and their branches."""
    out = []
    for name in names:
        run = RunDir(sweep_path / "runs" / name)
        out += [run] + [RunDir(b) for b in branches.list_dirs(run.path)]
    return out


def read_launches(sweep_path) -> list[dict]:
    folder = sweep_path / LAUNCHES
    out = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    return out


def sweep_summary(sweep_path, names: list[str]) -> dict:
    return summarize([read(r) for r in run_dirs(sweep_path, names)],
                     read_launches(sweep_path))


class Launch:
    """A launcher's window on the sweep: when it began, when it started its first worker
    (`ready`), when it last said it was alive (`end`), and how many slots it has."""

    def __init__(self, sweep_path, backend: str, slots: int, every_s: float = 2.0):
        self.record = {"backend": backend, "slots": slots, "start": time.time(),
                       "ready": None, "host": host_id(), "pid": os.getpid()}
        self.path = sweep_path / LAUNCHES / (
            f"{int(self.record['start'])}-{host_id()}-{os.getpid()}.json")
        self.every_s, self._written = every_s, 0.0
        self.flush(force=True)

    def ready(self) -> None:
        if self.record["ready"] is None:
            self.record["ready"] = time.time()
            self.flush(force=True)

    def flush(self, force: bool = False) -> None:
        """Say the launch is alive now (at most every `every_s` unless `force`)."""
        now = time.time()
        if not force and now - self._written < self.every_s:
            return
        self.record["end"], self._written = now, now
        try:
            write_atomic(self.path, json.dumps(self.record))
        except OSError:  # a blip: the next flush writes it again
            pass
