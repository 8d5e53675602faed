"""What code and machine trained a run: <run>/provenance.json.

{"sessions": [...]}: one session each time a trainer starts the run -- a fresh start and
every resume, since a resume may run on another commit, machine or set of versions. A
session is appended, never rewritten over an earlier one. Each holds the step it started
from, the time, the host, the git commit of the checkout tinyscale was imported from and
whether it had uncommitted changes (none when tinyscale is not imported from a checkout,
or git and the .git files cannot say), the versions of tinyscale and the packages that
shape a number (jax, jaxlib, flax, optax, orbax-checkpoint, numpy), Python, the platform,
and the devices and processes of the program. Only the trainer writes it (process 0, in
trainer.Trainer.run: solo, packed and branch runs alike); eval and sample only read runs.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import pathlib
import platform
import socket
import subprocess
import time

import jax

import tinyscale
from tinyscale.train.rundir import RunDir

PACKAGES = ("tinyscale", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
GIT_TIMEOUT_S = 5.0  # a hung git (a network file system) must not hold up training
CHANGED_SHOWN = 20   # at most this many changed paths are named


def record(run: RunDir, step: int) -> dict:
    """Append this process's session, starting at `step`, to the run's provenance.json;
    the session."""
    now = session(step)
    sessions = read(run)
    run.write_json(run.provenance, {"sessions": [*sessions, now]})
    return now


def read(run: RunDir) -> list[dict]:
    """The run's sessions, oldest first ([] for a run trained before they were recorded)."""
    return (run.read_json(run.provenance) or {}).get("sessions", [])


def session(step: int) -> dict:
    """This process's session: code, versions, machine, devices, time."""
    devices = jax.devices()
    return {"step": int(step), "time": time.time(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "hostname": socket.gethostname(), "pid": os.getpid(), "git": git(),
            "versions": versions(), "python": platform.python_version(),
            "platform": platform.platform(), "backend": jax.default_backend(),
            "device_kind": devices[0].device_kind, "devices": len(devices),
            "local_devices": jax.local_device_count(), "processes": jax.process_count()}


@functools.cache
def versions() -> dict:
    """{package: version} of PACKAGES (None for one not installed as a distribution)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.cache
def git() -> dict:
    """{commit, dirty, changed} of the git checkout tinyscale is imported from; {} when it
    is not imported from one (an installed copy). `dirty`: a tracked file differs from the
    commit, or a file inside the package is untracked (None when git cannot say)."""
    package = pathlib.Path(tinyscale.__file__).resolve().parent
    try:
        top = _git(package, "rev-parse", "--show-toplevel")
        if top is None:
            return _read_head(package.parent)
        top = pathlib.Path(top)
        inside = package.relative_to(top).as_posix()
        if _git(top, "ls-files", "--error-unmatch", f"{inside}/__init__.py") is None:
            return {}  # an installed copy inside some other repository
        commit = _git(top, "rev-parse", "HEAD")
        status = _git(top, "status", "--porcelain", "--untracked-files=normal")
    except (OSError, subprocess.TimeoutExpired, ValueError):  # no git, hung, not below top
        return _read_head(package.parent)
    if commit is None:
        return {}
    if status is None:
        return {"commit": commit, "dirty": None}
    changed = [line[3:] for line in status.splitlines()
               if not line.startswith("??") or line[3:].startswith(f"{inside}/")]
    return {"commit": commit, "dirty": bool(changed), "changed": changed[:CHANGED_SHOWN]}


def _git(where: pathlib.Path, *args: str) -> str | None:
    """git's output (trailing newline removed), or None when it fails; raises OSError
    without git."""
    # no optional locks: status would otherwise refresh the index, racing the user's git
    done = subprocess.run(["git", "-C", str(where), "--no-optional-locks", *args],
                          capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    return done.stdout.rstrip("\n") if done.returncode == 0 else None


def _read_head(root: pathlib.Path) -> dict:
    """The commit from the .git files of a checkout at `root` without git (a worktree's
    .git is a file naming its git directory); dirty unknown. {} when it is no checkout."""
    dot = root / ".git"
    try:
        gitdir = dot if dot.is_dir() else (root / dot.read_text().split("gitdir:", 1)[1]
                                           .strip())
        head = (gitdir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return {"commit": head, "dirty": None}
        ref = head.split(":", 1)[1].strip()
        common = gitdir / (gitdir / "commondir").read_text().strip() \
            if (gitdir / "commondir").exists() else gitdir
        for base in (gitdir, common):
            if (base / ref).exists():
                return {"commit": (base / ref).read_text().strip(), "dirty": None}
        for line in (common / "packed-refs").read_text().splitlines():
            if line.endswith(f" {ref}"):
                return {"commit": line.split()[0], "dirty": None}
    except (OSError, IndexError):
        pass
    return {}
