"""The sweep directory: sweep.json, one run directory per run, and per-run locks.

    <sweep_dir>/sweep.json        the expanded sweep: the sweep file's text and argument,
                                  the base config, and each run's name, overrides, config
    <sweep_dir>/runs/<name>/      a run directory (tinyscale/rundir.py) + `lock`
    <sweep_dir>/jax_cache/        the persistent compilation cache all its runs share

A lock records the host, pid and time of the process training the run; it is stale
(and taken over) when that process is dead, or when the run's heartbeat is older than
`launch.stale_after_s` (a lock from another host).
"""

from __future__ import annotations

import json
import os
import socket
import time

import ml_collections
from etils import epath

from tinyscale.errors import TinyscaleError
from tinyscale.launch.plan import Run
from tinyscale.rundir import RunDir, resolve, write_atomic


def run_config(run: dict) -> ml_collections.ConfigDict:
    """The config of one run record of sweep.json (no re-reading of the file)."""
    return ml_collections.ConfigDict(run["config"])


class SweepDir:
    def __init__(self, path: str):
        self.path = resolve(path)
        self.file = self.path / "sweep.json"
        self.compilation_cache = self.path / "jax_cache"

    def create(self, spec: str, base, runs: list[Run]) -> None:
        """Write sweep.json; a directory holding a different sweep is refused."""
        path, _, arg = spec.partition(":")
        record = {"spec": spec, "arg": arg, "source": epath.Path(path).read_text(),
                  "base": base.to_dict(),
                  "runs": [{"index": r.index, "name": r.name, "overrides": r.overrides,
                            "config": r.config.to_dict()} for r in runs]}
        if self.file.exists():
            old = self.load()
            if [r["name"] for r in old["runs"]] != [r["name"] for r in record["runs"]] or \
                    [r["config"] for r in old["runs"]] != [r["config"] for r in record["runs"]]:
                raise TinyscaleError(
                    f"{self.path} holds a different sweep ({old['spec']}): use a new "
                    "--sweep-dir, or the same sweep file to continue it.")
            return
        write_atomic(self.file, json.dumps(record, indent=1, default=str) + "\n")

    def load(self) -> dict:
        if not self.file.exists():
            raise TinyscaleError(f"{self.path} holds no sweep.json: start it with "
                                 "`tinyscale sweep run FILE --sweep-dir DIR`.")
        return json.loads(self.file.read_text())

    def runs(self) -> list[dict]:
        return self.load()["runs"]

    def config(self, index: int) -> ml_collections.ConfigDict:
        return run_config(self.runs()[index])

    def rundir(self, name: str) -> RunDir:
        return RunDir(self.path / "runs" / name)

    # ---- locks ----------------------------------------------------------------------

    def _lock(self, name: str) -> epath.Path:
        return self.path / "runs" / name / "lock"

    def lock_owner(self, name: str, stale_after_s: float) -> dict | None:
        """The live owner of a run's lock, or None (no lock, or a stale one)."""
        lock = self._lock(name)
        if not lock.exists():
            return None
        try:
            owner = json.loads(lock.read_text())
        except (ValueError, FileNotFoundError):
            return None
        if owner.get("host") == socket.gethostname():
            return owner if _alive(owner.get("pid", -1)) else None
        heartbeat = self.rundir(name).state().get("heartbeat", owner.get("time", 0))
        return owner if time.time() - max(heartbeat, owner.get("time", 0)) < stale_after_s \
            else None

    def claim(self, name: str, stale_after_s: float) -> bool:
        """Take the run's lock for this process; False if a live process holds it."""
        lock = self._lock(name)
        lock.parent.mkdir(parents=True, exist_ok=True)
        if lock.exists() and self.lock_owner(name, stale_after_s) is None:
            lock.unlink(missing_ok=True)  # stale: its owner is gone
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "time": time.time()})
        if str(lock).startswith("gs://"):  # no O_EXCL on object stores: write, then re-read
            if lock.exists():
                return False
            lock.write_text(body)
            return json.loads(lock.read_text())["pid"] == os.getpid()
        try:
            fd = os.open(str(lock), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(body)
        return True

    def release(self, name: str) -> None:
        self._lock(name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True
