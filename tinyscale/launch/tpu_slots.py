"""A slot of the Cloud TPU backend: one queued resource and the workers on its hosts, as
a small state machine that the launcher's watch loop advances one tick at a time.

    NEW ──(gone)──> CREATING ──(ACTIVE)──> STARTING ──> RUNNING
     │  (ACTIVE, workers alive: adopted)               │  │ (workers died: STARTING)
     └──────────────────────────────────────────────────┘  │
    RUNNING ──(SUSPENDED / FAILED / gone)──> DELETING ──> CREATING ...

Each tick describes the queued resource (unless an action is in flight or a failed
describe's backoff is not over) and moves on by what it says. Whatever takes long
(create, delete, set-up, starting workers) runs as the slot's one background action,
so a slot waiting for capacity or being set up never holds up the watch of the others.
A failed describe moves nothing: it is retried with a backoff of `launch.tpu_poll_s`
doubling up to 10x, and never read as a preemption.
"""

from __future__ import annotations

import threading
import time

from tinyscale.errors import TinyscaleError
from tinyscale.launch import tpu_gcloud as gc
from tinyscale.launch.sweepdir import SweepDir, run_config


class Slot:
    """One queued resource of the sweep and the workers on its hosts."""

    def __init__(self, g: gc.Gcloud, index: int, name: str, sweep_dir: str, labels: dict,
                 set_up, start, say):
        self.g, self.index, self.name, self.sweep_dir = g, index, name, sweep_dir
        self.labels, self._set_up, self._start, self.say = labels, set_up, start, say
        self.phase = "NEW"
        self.started, self.restarts = 0.0, 0   # workers' start; restarts since progress
        self.failures, self.next_check = 0, 0.0  # describe/action failures in a row
        self._action: threading.Thread | None = None
        self._error: BaseException | None = None
        self._said_waiting = False

    def __repr__(self) -> str:
        return f"slot {self.index} ({self.name}, {self.phase})"

    # ---- background actions ------------------------------------------------------

    def busy(self) -> bool:
        return self._action is not None and self._action.is_alive()

    def _do(self, phase: str, fn) -> None:
        self.phase, self._error = phase, None

        def act():
            try:
                fn()
            except BaseException as error:  # read by the next tick, in the main thread
                self._error = error
        self._action = threading.Thread(target=act, daemon=True,
                                        name=f"slot{self.index}-{phase.lower()}")
        self._action.start()

    def _create(self) -> None:
        out = gc.create(self.g, self.name, self.labels)
        if out.returncode:
            kind, message = gc.classify(out.stderr), gc.last_line(out.stderr)
            if kind == "quota":
                raise gc.quota_error(self.g, self.name, message)
            if kind in ("refused", "not_found"):
                raise gc.refused_error(self.g, self.name, message)
            if kind == "capacity":
                la = self.g.launch
                raise Retry(f"no capacity now ({message}); the other slots keep working "
                            f"(launch.tpu_zone={la.tpu_zone} and launch.tpu_accelerator="
                            f"{la.tpu_accelerator} choose where)")
            if kind != "exists":  # exists: made by an earlier call; the next tick reads it
                raise Retry(f"create failed ({message})")

    def _recreate(self) -> None:
        out = gc.delete(self.g, self.name)
        if out.returncode:
            raise Retry(f"delete failed ({gc.last_line(out.stderr)})")
        self.phase = "CREATING"
        self._create()

    def _start_workers(self, set_up: bool) -> None:
        try:
            if set_up:
                self._set_up(self)
            self.started = time.time()  # before: a fast worker's first heartbeat is newer
            self._start(self)
        except Retry:
            raise
        except TinyscaleError as error:  # a failed ssh: a slice preempted meanwhile, a host
            # not answering. Tried again after a backoff (counted as a restart); the next
            # describe says whether the slice must be created again first.
            raise Retry(str(error)) from None

    # ---- one tick ----------------------------------------------------------------

    def tick(self, sweep: SweepDir, left: list[dict], la) -> None:
        """Advance by one step: read the action's outcome or the resource's state."""
        now = time.time()
        if self.busy() or now < self.next_check:
            return
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, TinyscaleError) and not isinstance(error, Retry):
                raise error
            if isinstance(error, gc.Stopped):
                return
            if self.phase == "STARTING":  # set-up or start failed: counts as a restart
                self._count_restart(la, left, "setting up or starting its workers failed")
            self._back_off(la, f"{self.phase.lower()}: {error}")
            self.phase = "NEW" if self.phase in ("STARTING", "DELETING") else self.phase
            return
        if self.phase == "STARTING":  # the action finished
            self.phase = "RUNNING"
            self.say(f"slot {self.index}: {self.name} working {self.sweep_dir}")
        found = gc.describe(self.g, self.name)
        if not found.state:
            self._back_off(la, f"describe failed ({found.message}); not read as a "
                               "preemption, nothing deleted")
            return
        if self.failures > 1:
            self.say(f"slot {self.index}: {self.name} answers again ({found.state})")
        self.failures = 0
        self._check_owner(found)
        self._advance(found, sweep, left, la)

    def _advance(self, found: gc.Described, sweep: SweepDir, left: list[dict], la) -> None:
        state, was = found.state, self.phase
        if state == gc.GONE:
            if was in ("STARTING", "RUNNING"):
                self.say(f"slot {self.index}: {self.name} is gone (preempted); creating it "
                         "again")
            elif was == "NEW":
                self.say(f"slot {self.index}: creating {self.name}")
            self._said_waiting = False
            self._do("CREATING", self._create)
        elif state in gc.PREEMPTED:
            if gc.classify(found.message) == "quota":
                raise gc.quota_error(self.g, self.name, found.message)
            why = f": {found.message}" if found.message else ""
            self.say(f"slot {self.index}: {self.name} is {state} (preempted{why}); creating "
                     "it again")
            self._said_waiting = False
            self._do("DELETING", self._recreate)
        elif state == "DELETING":
            self.phase = "DELETING"
        elif state in gc.WAITING:
            self.phase = "CREATING"
            if state == "WAITING_FOR_RESOURCES" and not self._said_waiting:
                self._said_waiting = True
                self.say(f"slot {self.index}: {self.name} is WAITING_FOR_RESOURCES: no "
                         f"capacity for launch.tpu_accelerator={la.tpu_accelerator} in "
                         f"launch.tpu_zone={la.tpu_zone} yet; the other slots keep working")
        elif state == gc.LIVE:
            self._active(sweep, left, la)

    def _active(self, sweep: SweepDir, left: list[dict], la) -> None:
        ttl = la.stale_after_s
        if self.phase == "NEW":  # found ACTIVE at launch: adopt it
            self.started = self.newest_start(sweep)
            if not self.workers_gone(sweep, ttl):
                self.phase = "RUNNING"
                self.say(f"slot {self.index}: adopted {self.name}, its workers training")
                return
            self.say(f"slot {self.index}: adopted {self.name}; setting it up and starting "
                     "its workers")
            self._do("STARTING", lambda: self._start_workers(set_up=True))
        elif self.phase in ("CREATING", "DELETING"):
            self._do("STARTING", lambda: self._start_workers(set_up=True))
        elif self.phase == "RUNNING":
            why = self.workers_gone(sweep, ttl)
            # read after the heartbeats: a worker writes a run's end before its own exit
            free = why and [r for r in left if sweep.lock_owner(r["name"], ttl) is None
                            and sweep.runnable(r, run_config(r).launch.max_attempts)]
            if free:
                self._count_restart(la, left, "its workers stopped")
                self.say(f"slot {self.index}: workers {why} with {len(free)} run(s) left; "
                         "restarting them")
                self._do("STARTING", lambda: self._start_workers(set_up=False))

    def _count_restart(self, la, left: list[dict], what: str) -> None:
        self.restarts += 1
        if self.restarts > la.max_attempts * max(1, len(left)):
            raise TinyscaleError(
                f"slot {self.index} ({self.name}): {what} {self.restarts} times with no run "
                f"finished in between; see ~/tinyscale-worker-{self.index}.log on its hosts "
                f"(gcloud compute tpus tpu-vm ssh {self.name} --worker=all).")

    def _back_off(self, la, what: str) -> None:
        """Try again after poll x 2^(failures-1), at most 10 polls; say so at 2, 4, 8, ...
        failures in a row (one alone is a blip not worth a line)."""
        self.failures += 1
        delay = min(la.tpu_poll_s * 2 ** (self.failures - 1), 10 * la.tpu_poll_s)
        self.next_check = time.time() + delay
        if self.failures > 1 and self.failures & (self.failures - 1) == 0:
            self.say(f"slot {self.index}: {self.name}: {what}; trying again in {delay:.4g} s "
                     f"({self.failures} in a row)")

    def _check_owner(self, found: gc.Described) -> None:
        """A queued resource of this name that another sweep made is refused, never
        adopted or deleted."""
        if found.state == gc.GONE or found.labels.get(gc.LABEL_SWEEP) == \
                self.labels[gc.LABEL_SWEEP]:
            return
        theirs = found.labels.get(gc.LABEL_SWEEP, "none")
        raise TinyscaleError(
            f"queued resource {self.name} exists but is not this sweep's (label "
            f"{gc.LABEL_SWEEP}={theirs}, this sweep's {self.labels[gc.LABEL_SWEEP]}): set "
            f"launch.tpu_prefix to another prefix, or delete it if it is stale (gcloud "
            f"compute tpus queued-resources delete {self.name} {' '.join(self.g.where())} "
            "--force).")

    def newest_start(self, sweep: SweepDir) -> float:
        """When this slot's newest workers started (a minute of slack: the hosts of one
        start begin within seconds), so older workers' heartbeats do not count; 0: none."""
        starts = [b.get("started", 0) for b in sweep.heartbeats(self.index)]
        return max(starts) - 60 if starts else 0.0

    def workers_gone(self, sweep: SweepDir, ttl: float) -> str:
        """Why this slot's workers are not working ('' while they are): a heartbeat
        expired (they died) or says they exited. Heartbeats older than the last start
        do not count; none at all counts only once start-up had time (2 ttl + 60 s)."""
        now = time.time()
        beats = [b for b in sweep.heartbeats(self.index) if b.get("started", 0) >= self.started]
        if not beats:
            return "never started" if now - self.started > 2 * ttl + 60 else ""
        if any("exited" in b for b in beats):
            return f"exited ({', '.join(str(b['exited']) for b in beats if 'exited' in b)})"
        if any(b.get("expires", 0) < now for b in beats):
            return "stopped (heartbeat expired)"
        hosts = max(b.get("processes", 1) for b in beats)
        if len(beats) < hosts and now - self.started > 2 * ttl + 60:
            return f"{len(beats)} of {hosts} hosts running"
        return ""


class Retry(TinyscaleError):
    """A background action failed in a way worth trying again (after a backoff)."""

