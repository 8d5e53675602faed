"""A run's lifecycle around the loop: its lock (a second trainer is refused; an error
never leaves a run 'running'), a full disk said in one line, SIGTERM / SIGINT turned
into a flag the loop reads and a stop that leaves the runs to resume, and the refusal of
a workdir that holds another run."""

from __future__ import annotations

import errno
import re
import signal

import jax

from tinyscale import config as config_lib
from tinyscale.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED, TinyscaleError
from tinyscale.train.rundir import RunDir

DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def check_same_run(run: RunDir, config) -> None:
    """Refuse a workdir that holds another run: its checkpoints would be overwritten."""
    old = run.read_json(run.config)
    if old is None:
        return
    old = config_lib.from_saved(old).to_dict()  # knobs added since get their defaults
    new = config.to_dict()
    for section in sorted(set(old) | set(new)):
        if section in ("output", "distributed"):
            continue
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            key = f"{section}.{diffs[0]}" if diffs else None
            was, now = (a.get(diffs[0]), b.get(diffs[0])) if diffs else (None, None)
        else:
            key, was, now = (section, a, b) if a != b else (None, None, None)
        if key:
            raise TinyscaleError(
                f"{run.path} holds a run with config.{key}={was!r}, not {now!r}: use a new "
                "--workdir, or the same config to resume it.")


def locked(runs: list[RunDir], config, work) -> int:
    """`work()` holding the runs' locks; an error never leaves a run 'running'."""
    lead = jax.process_index() == 0
    held = []
    try:
        for run in runs:
            if lead and not run.acquire(config.launch.stale_after_s):
                owner = run.lock_owner(config.launch.stale_after_s) or {}
                raise TinyscaleError(
                    f"{run.path} is being trained by pid {owner.get('pid')} on "
                    f"{owner.get('host')}: wait for it to finish or stop it"
                    + (", or pack without it" if len(runs) > 1 else "")
                    + "; a second trainer would write the same checkpoints.")
            held.append(run)
        return work()
    except Exception as error:
        full = disk_full(error)
        for run in held:
            if lead and run.state().get("state") == "running":  # never leave it running
                failed = full or not isinstance(error, TinyscaleError)
                set_state_quietly(run, "failed" if failed else "pending",
                                   last_error=full or one_line(error))
        if full:
            raise TinyscaleError(f"{full}: free space (or raise the file-size limit) and run "
                                 "the same command again; it resumes from the newest "
                                 "checkpoint.") from None
        raise
    finally:
        if lead:
            for run in held:
                run.release()


def disk_full(error: BaseException) -> str:
    """'ENOSPC writing PATH: the disk is full' when `error` is a full disk (an OSError, or
    orbax/tensorstore's ValueError naming the OS error code); else ''."""
    code = getattr(error, "errno", None)
    if code is None:
        found = re.search(r"os_error_code='?(\d+)", str(error))
        code = int(found.group(1)) if found else None
    if code not in DISK_FULL:
        return ""
    where = getattr(error, "filename", None) or ""
    return f"{errno.errorcode[code]}{' writing ' + where if where else ''}: the disk is full"


def one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"


def set_state_quietly(run: RunDir, state: str, **fields) -> None:
    try:  # on a full disk even this may fail; the lock and the exit code still say it
        run.set_state(state, **fields)
    except OSError:
        pass


class Signals:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step."""

    def __init__(self):
        self.received = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame):
        if self.received is None:  # the first signal decides; repeats change nothing
            self.received = signum

    def restore(self):
        for s, handler in self._old.items():
            signal.signal(s, handler)


def stopped(runs: list[RunDir], step: int, signum: int, what: str, lead: bool, say) -> int:
    """`runs` stopped by signal `signum` at `step`, left pending (run again to resume);
    the exit code. `what`: what was done or is left ("checkpoint saved")."""
    name = signal.Signals(signum).name
    if lead:
        for run in runs:
            run.set_state("pending", step=step, last_error=f"{name} at step {step}")
    say(f"{name}: {what} at step {step}; run again to resume.")
    return EXIT_PREEMPTED if signum == signal.SIGTERM else EXIT_INTERRUPTED
