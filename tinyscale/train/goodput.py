"""Goodput of a run: where each attempt's hours went, and the steps lost to preemption.

Every attempt (a process training a run) keeps one line of `<run>/goodput.jsonl`:

    {"worker": "host:pid", "start": unix s, "end": unix s (its last flush),
     "first_step": 11, "last_step": 30, "runs": K, "wall_s": ...,
     "seconds": {"startup", "compile", "data", "train", "eval", "checkpoint"}}

Its wall time, from the process's start (or, for a later attempt of the same process --
a branch, the next run of a TPU slot -- the previous attempt's end) to its last flush, is
split into CATEGORIES that sum to it exactly: each interval between two marks is charged
to one category (`Attempt.charge`), less the compilation inside it.

* startup: to the first step -- imports, building the model and data, restoring.
* compile: jit tracing, lowering and XLA compilation (a persistent-cache hit: its load),
  taken from JAX's own compile events (`jax.monitoring`, /jax/core/compile/*, which
  time the three disjoint stages of every jit compile on this thread) wherever they
  happen: the first step, the first held-out loss, generation in the final evaluation.
* data: the host's time building batches. On an accelerator this overlaps the step
  before it (steps are dispatched asynchronously), so it bounds the wait from above.
* train: the rest of the loop -- the steps, and logging them.
* eval: held-out loss during training, and the final evaluation.
* checkpoint: the time the loop is blocked by saves (orbax saves in the background).

The line is rewritten atomically at every log step and at the end, so a SIGKILLed
attempt keeps its accounting up to its last log step. A packed run (K runs as one
program) holds its share: the program's seconds / K, so a sweep's sums count each
process once. `lost`: the steps an attempt trained that a later one resumed from
before (trained again after a preemption), at that attempt's seconds per training step.
A sweep's capacity, idle time and goodput: tinyscale/launch/goodput.py. The names
follow MaxText's ml-goodput-measurement (goodput; badput by cause).
"""

from __future__ import annotations

import json
import os
import threading
import time

import jax

from tinyscale.storage import write_atomic
from tinyscale.train.lease import host_id
from tinyscale.train.rundir import RunDir

CATEGORIES = ("startup", "compile", "data", "train", "eval", "checkpoint")
FILE = "goodput.jsonl"


# ---- the process's clock --------------------------------------------------------------

def _process_age() -> float:
    """Seconds since this process started (Linux: its start time in /proc; elsewhere,
    since this module was imported)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # field 3 onwards
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf(
            "SC_CLK_TCK")  # field 22: the start, in clock ticks since boot
        return age if 0 <= age < 86400 * 365 else 0.0
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


_age = _process_age()
# where the next attempt of this process starts: (perf_counter, unix time, compile s)
_since = [time.perf_counter() - _age, time.time() - _age, 0.0]
_compiled = [0.0]  # seconds this process's main thread has spent compiling
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


def _on_event(event: str, seconds: float, **kwargs) -> None:
    if event in _COMPILE_EVENTS and threading.current_thread() is threading.main_thread():
        _compiled[0] += seconds


jax.monitoring.register_event_duration_secs_listener(_on_event)


class Attempt:
    """The accounting of this process's attempt at `runs` (K >= 1 trained as one
    program), written by the lead process only."""

    def __init__(self, runs: list[RunDir], enabled: bool):
        self.runs, self.enabled = runs, enabled
        self._mark, self.start, self._compiled = _since
        self.seconds = dict.fromkeys(CATEGORIES, 0.0)
        self.first_step = self.last_step = None
        self.closed = False
        self._kept = [read(r) for r in runs] if enabled else []

    def charge(self, category: str) -> None:
        """The time since the last mark to `category`, less what was compiled in it."""
        now, compiled = time.perf_counter(), _compiled[0]
        self.seconds["compile"] += compiled - self._compiled
        self.seconds[category] += now - self._mark - (compiled - self._compiled)
        self._mark, self._compiled = now, compiled

    def begin(self, step: int) -> None:
        """The loop starts after `step` (the step restored, 0 for none): the rest is
        startup."""
        self.first_step, self.last_step = step + 1, step
        self.charge("startup")
        self.flush(step)

    def flush(self, step: int) -> None:
        """Rewrite this attempt's line of every run, trained up to `step`."""
        if self.first_step is None:  # stopped before its first step: all startup
            self.first_step, self.last_step = step + 1, step
        self.last_step = step
        if not self.enabled:
            return
        k, wall = len(self.runs), sum(self.seconds.values())
        record = {"worker": f"{host_id()}:{os.getpid()}", "start": self.start,
                  "end": self.start + wall, "first_step": self.first_step,
                  "last_step": step, "runs": k, "wall_s": wall / k,
                  "seconds": {c: s / k for c, s in self.seconds.items()}}
        for run, kept in zip(self.runs, self._kept, strict=True):
            try:
                write_atomic(run.path / FILE, "".join(json.dumps(x) + "\n"
                                                      for x in [*kept, record]))
            except OSError:  # a full disk, a blip: the next flush writes it again
                pass

    def close(self, step: int | None = None, category: str = "train") -> None:
        """The attempt's last line (the time since the last mark to `category`); the
        next attempt of this process starts here."""
        if self.closed:
            return
        self.charge(category)
        self.flush(self.last_step if step is None else step)
        self.closed = True
        _since[:] = [self._mark, self.start + sum(self.seconds.values()), self._compiled]


def read(run: RunDir) -> list[dict]:
    """A run directory's attempts, oldest first ([] before its first)."""
    return run.read_jsonl(run.path / FILE)


# ---- the arithmetic ---------------------------------------------------------------------

def lost(attempts: list[dict]) -> list[tuple[int, float]]:
    """(steps, seconds) each attempt trained in vain: the steps past the earliest step a
    later attempt resumed from (those were trained again), at the attempt's training
    seconds per step. Usually the next attempt resumes from the last checkpoint:
    steps = last_step - (next first_step - 1)."""
    out = []
    for i, a in enumerate(attempts):
        trained = a["last_step"] - a["first_step"] + 1
        later = [b["first_step"] - 1 for b in attempts[i + 1:]]
        if not later or trained <= 0:
            out.append((0, 0.0))
            continue
        steps = max(0, a["last_step"] - max(a["first_step"] - 1, min(later)))
        out.append((steps, steps * a["seconds"]["train"] / trained))
    return out


def run_summary(attempts: list[dict]) -> dict:
    """Seconds by category over a run's attempts, with `wall`, `lost` (seconds, part of
    train) and `lost_steps`."""
    out = dict.fromkeys(CATEGORIES, 0.0)
    out.update(wall=0.0, lost=0.0, lost_steps=0, attempts=len(attempts))
    for a, (steps, seconds) in zip(attempts, lost(attempts), strict=True):
        for c in CATEGORIES:
            out[c] += a["seconds"].get(c, 0.0)
        out["wall"] += a["wall_s"]
        out["lost"] += seconds
        out["lost_steps"] += steps
    return out
