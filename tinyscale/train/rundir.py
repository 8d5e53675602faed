"""The run directory: the contract between train, eval, launch and analysis.

    <workdir>/config.json   the resolved config      <workdir>/state.json  run state
    <workdir>/metrics.jsonl one object per log step  <workdir>/tb/         TensorBoard
    <workdir>/checkpoints/  orbax                    <workdir>/eval.json, samples.jsonl
    <workdir>/data/         its tokenizer, held-out split and meta.json (read alone)
    <workdir>/lock          the process training it  <workdir>/eval-step<N>.json, ...
    <workdir>/provenance.json  code, versions and    evaluations of earlier checkpoints,
       devices of each training session (written     eval-<hash>.json of other settings
       by the trainer only: provenance.py)

Paths go through etils.epath, so a workdir may be local or gs://. Every JSON writer is
atomic (temp file, then rename): a kill at any moment leaves the previous good file.
Every trainer holds the run's lock while it trains: two processes never write one run.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

from etils import epath

from tinyscale.errors import TinyscaleError
from tinyscale.storage import is_remote, resolve, write_atomic
from tinyscale.train import lease
from tinyscale.train.lease import host_id

STATES = ("pending", "running", "done", "failed")
BRANCHES = "branches"  # <run>/branches/<tokens>/: the one place a run may nest (branches.py)


class RunDir:
    def __init__(self, workdir: str | os.PathLike):
        self.path = resolve(workdir)

    config = property(lambda self: self.path / "config.json")
    state_file = property(lambda self: self.path / "state.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    data = property(lambda self: self.path / "data")  # its tokenizer and held-out split
    tensorboard = property(lambda self: self.path / "tb")
    lock_file = property(lambda self: self.path / "lock")
    provenance = property(lambda self: self.path / "provenance.json")  # provenance.py

    @property
    def sweep_dir(self) -> epath.Path | None:
        """The sweep directory this run belongs to (<sweep>/runs/<name>), or None."""
        parent = self.path.parent
        if parent.name == "runs" and (parent.parent / "sweep.json").exists():
            return parent.parent
        return None

    def eval_file(self, step: int | None = None, variant: str = "") -> epath.Path:
        """eval.json (the final evaluation), eval-step<N>.json for an earlier step; with
        `variant` (eval settings other than the run's own), eval[-step<N>]-<variant>.json."""
        return self.path / f"eval{_suffix(step, variant)}.json"

    def samples_file(self, step: int | None = None, variant: str = "") -> epath.Path:
        return self.path / f"samples{_suffix(step, variant)}.jsonl"

    eval = property(eval_file)
    samples = property(samples_file)

    def read_json(self, path: epath.Path, default=None):
        return json.loads(path.read_text()) if path.exists() else default

    def write_json(self, path: epath.Path, value) -> None:
        write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")

    def state(self) -> dict:
        return self.read_json(self.state_file, {"state": "pending", "attempts": 0})

    def set_state(self, state: str, **fields) -> dict:
        assert state in STATES, state
        current = self.state()
        current.update(fields, state=state, host=host_id(), pid=os.getpid(),
                       heartbeat=time.time())
        self.write_json(self.state_file, current)
        return current

    def read_metrics(self) -> list[dict]:
        return self.read_jsonl(self.metrics)

    @staticmethod
    def read_jsonl(path: epath.Path) -> list[dict]:
        """The records of a JSON-lines file of the run ([] when absent)."""
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut short by a kill
                pass
        return records

    def truncate_metrics(self, last_step: int) -> None:
        """Drop metric lines past `last_step` (work lost since the restored checkpoint)."""
        kept = [m for m in self.read_metrics() if m["step"] <= last_step]
        write_atomic(self.metrics, "".join(json.dumps(m) + "\n" for m in kept))

    # ---- where a run may live ------------------------------------------------------

    def check_workdir(self) -> None:
        """Refuse a workdir that is a file, lies inside another run, or holds a foreign
        checkpoints/ folder (one with contents but no config.json beside it): orbax's
        clean-up there would delete what is not its own."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise TinyscaleError(f"--workdir {p} is a file, not a directory: give a new or "
                                 "existing run directory.")
        for parent in list(p.parents)[:-1]:
            if parent == p.parent.parent and p.parent.name == BRANCHES and p.name.isdigit():
                continue  # a branch of that run (tinyscale/train/branches.py)
            if (parent / "config.json").exists() and (parent / "checkpoints").exists():
                raise TinyscaleError(f"--workdir {p} lies inside the run directory {parent}: "
                                     "give a path outside every run directory.")
        # an empty checkpoints/ with no config.json is a run killed while it started (the
        # checkpoint manager is made before config.json is written): it starts afresh
        if not self.config.exists() and self.checkpoints.exists() \
                and any(self.checkpoints.iterdir()):
            raise TinyscaleError(f"--workdir {p} holds a checkpoints/ folder but no "
                                 "config.json, so it is not a tinyscale run: use another "
                                 "--workdir.")

    # ---- the lock every trainer holds -----------------------------------------------

    def lock_owner(self, stale_after_s: float) -> dict | None:
        """Who holds the run's lock ({host, pid, ...}), or None.

        A local lock is an flock the kernel drops when its process dies, so it is never
        stale. On gs:// it is a lease (tinyscale/train/lease.py), held until it expires
        (`stale_after_s` after its last renewal) or its process dies on this host.
        """
        key = str(self.lock_file)
        if key in _HELD:
            return _HELD[key][1]
        if is_remote(key):
            record, _ = lease.GcsLease(key, stale_after_s).read()
            return record if lease.live(record) else None
        try:
            fd = os.open(key, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_owner(self.lock_file) or {"host": "?", "pid": "?"}
        finally:
            os.close(fd)  # closing drops the probe's shared lock too
        return None

    def acquire(self, stale_after_s: float) -> bool:
        """Take the run's lock for this process (True at once if it holds it already);
        False if another live process holds it. On gs:// the lease is renewed from a
        thread until `release`."""
        key = str(self.lock_file)
        if key in _HELD:
            return True
        if is_remote(key):
            held = lease.GcsLease(key, stale_after_s)
            if not held.acquire():
                return False
            _HELD[key] = (lease.Renewer(held), {"host": lease.host_id(), "pid": os.getpid()})
            return True
        self.path.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(key, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:  # the file we locked must still be the one at the path
                same = os.stat(key).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        owner = {"host": host_id(), "pid": os.getpid(), "time": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner).encode())
        _HELD[key] = (fd, owner)
        return True

    def lock_lost(self) -> bool:
        """True when this process's lease was taken over (gs://; an flock cannot be)."""
        holder = _HELD.get(str(self.lock_file), (None,))[0]
        return bool(getattr(holder, "lost", False))

    def release(self) -> None:
        """Drop the lock if this process holds it (never another's)."""
        holder, _ = _HELD.pop(str(self.lock_file), (None, None))
        if holder is None:
            return
        if isinstance(holder, int):
            self.lock_file.unlink(missing_ok=True)
            os.close(holder)
        else:  # a lease's renewer
            holder.stop()
            holder.lease.release()


_HELD: dict[str, tuple] = {}  # lock path -> (flock fd or lease Renewer, owner) held here


def _suffix(step: int | None, variant: str) -> str:
    return ("" if step is None else f"-step{step}") + (f"-{variant}" if variant else "")


def _read_owner(path: epath.Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError):
        return None
