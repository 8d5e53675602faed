"""The Cloud TPU backend's view of Google Cloud: `gcloud` calls, what their errors mean,
and the queued resources of one sweep (its names and labels).

What gcloud says is read strictly: a queued resource is preempted only when `describe`
answers SUSPENDING, SUSPENDED or FAILED, and gone only when it answers NOT_FOUND. Any
other failure (a network blip, an expired token, a rate limit) says nothing about the
slice: `describe` returns state "" and the caller tries again later.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
import subprocess
import threading

from tinyscale.errors import TinyscaleError

LIVE = "ACTIVE"
WAITING = {"CREATING", "ACCEPTED", "PROVISIONING", "WAITING_FOR_RESOURCES"}
PREEMPTED = {"SUSPENDING", "SUSPENDED", "FAILED"}
GONE = "NOT_FOUND"  # describe's answer for a queued resource that does not exist
LABEL_SWEEP, LABEL_SLOT = "tinyscale-sweep", "tinyscale-slot"

# What gcloud's error text means (tests/test_tpu_faults.py holds real examples). A rate
# limit is worded as a quota too ("Quota exceeded for quota metric 'Read requests' ...
# per minute"): it is transient, not the user's TPU quota.
_RATE_LIMIT = re.compile(r"quota metric|per minute|rate limit|too many requests", re.I)
_QUOTA = re.compile(r"quota\b.*(exceeded|exhausted)", re.I)
_CAPACITY = re.compile(r"no more capacity|insufficient capacity|ZONE_RESOURCE_POOL_EXHAUSTED|"
                       r"currently unavailable in the .* zone|stockout", re.I)
_REFUSED = re.compile(r"INVALID_ARGUMENT|PERMISSION_DENIED|FAILED_PRECONDITION|"
                      r"is not (a )?valid|does not exist in zone|API .* not (been )?enabled",
                      re.I)


def classify(stderr: str) -> str:
    """What a failed gcloud call's error says: 'not_found', 'exists', 'quota' (the user's
    TPU quota), 'capacity' (none free in the zone now), 'refused' (a bad setting: zone,
    accelerator, runtime, project, permissions) or 'transient' (try again)."""
    if "NOT_FOUND" in stderr or re.search(r"was not found", stderr):
        return "not_found"
    if "ALREADY_EXISTS" in stderr or "already exists" in stderr:
        return "exists"
    if _RATE_LIMIT.search(stderr):
        return "transient"
    if _QUOTA.search(stderr):
        return "quota"
    if _CAPACITY.search(stderr):
        return "capacity"
    if _REFUSED.search(stderr):
        return "refused"
    return "transient"


def last_line(stderr: str) -> str:
    """The last line of gcloud's error, without its `ERROR: (gcloud.COMMAND)` prefix."""
    lines = [x.strip() for x in stderr.strip().splitlines() if x.strip()]
    if not lines:
        return "no message"
    line = re.sub(r"^ERROR: (\(gcloud[\w.-]*\) )?", "", lines[-1])
    return line if len(line) <= 300 else line[:300] + "..."


class Stopped(Exception):
    """The launcher is stopping: no more gcloud calls from background actions."""


class Gcloud:
    """`gcloud` with the sweep's zone and project. Calls may come from several threads
    (each slot's background action); `stop` ends the ones in flight."""

    def __init__(self, launch, dry_run: bool, say):
        self.launch, self.dry_run, self.say = launch, dry_run, say
        self._running: set[subprocess.Popen] = set()
        self._lock, self._stopped = threading.Lock(), False

    def where(self) -> list[str]:
        flags = [f"--zone={self.launch.tpu_zone}"]
        return flags + ([f"--project={self.launch.tpu_project}"]
                        if self.launch.tpu_project else [])

    def run(self, *args: str) -> subprocess.CompletedProcess:
        """Run `gcloud ARGS`; its CompletedProcess whatever its exit code."""
        cmd = ["gcloud", *args]
        if self.dry_run:
            print(shlex.join(cmd))
            return subprocess.CompletedProcess(cmd, 0, "", "")
        with self._lock:
            if self._stopped:
                raise Stopped()
            try:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, text=True)
            except FileNotFoundError:
                raise TinyscaleError("gcloud is not on PATH: install the Google Cloud CLI "
                                     "(https://cloud.google.com/sdk) and run `gcloud init`.") \
                    from None
            self._running.add(proc)
        try:
            out, err = proc.communicate()
        except BaseException:  # Ctrl-C in the main thread: the call ends with the launcher
            proc.kill()
            proc.wait()
            raise
        finally:
            with self._lock:
                self._running.discard(proc)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def __call__(self, *args: str, check: bool = True) -> str:
        out = self.run(*args)
        if check and out.returncode:
            raise TinyscaleError(f"`{shlex.join(out.args[:6])} ...` failed: "
                                 f"{last_line(out.stderr)}")
        return out.stdout.strip()

    def ssh(self, name: str, command: str, check: bool = True) -> str:
        return self("compute", "tpus", "tpu-vm", "ssh", name, "--worker=all", *self.where(),
                    f"--command={command}", check=check)

    def stop(self, grace_s: float = 5.0) -> None:
        """End the calls in flight (background creates, set-ups, an ssh that hangs) and
        refuse new ones: the launcher is stopping. Returns once they are gone (killed if
        a terminated one is not within `grace_s`), so none outlives the launcher."""
        with self._lock:
            self._stopped = True
            running = list(self._running)
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---- the queued resources of a sweep ---------------------------------------------------

def slot_names(sweep_dir: str, launch) -> list[str]:
    base = str(sweep_dir).rstrip("/").rsplit("/", 1)[-1].lower().replace("_", "-")
    return [f"{launch.tpu_prefix}-{base}-{i}" for i in range(launch.tpu_slots)]


def sweep_label(sweep_dir: str) -> str:
    """The label value naming a sweep (labels allow [a-z0-9_-], so a digest of its path)."""
    return hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:16]


@dataclasses.dataclass
class Described:
    state: str           # the queued resource's state, GONE, or "" (describe failed)
    labels: dict         # its node's labels
    message: str = ""    # why describe failed, or why the resource FAILED


def describe(g: Gcloud, name: str) -> Described:
    out = g.run("compute", "tpus", "queued-resources", "describe", name, *g.where(),
                "--format=json")
    if out.returncode:
        if classify(out.stderr) == "not_found":
            return Described(GONE, {})
        return Described("", {}, last_line(out.stderr))
    try:
        record = json.loads(out.stdout)
        state = record["state"]["state"]
    except (ValueError, KeyError, TypeError):
        return Described("", {}, f"unreadable describe output: {out.stdout.strip()[:200]!r}")
    specs = (record.get("tpu") or {}).get("nodeSpec") or [{}]
    labels = (specs[0].get("node") or {}).get("labels") or {}
    failed = (record["state"].get("failedData") or {}).get("error") or {}
    return Described(state, labels, failed.get("message", ""))


def create(g: Gcloud, name: str, labels: dict) -> subprocess.CompletedProcess:
    la = g.launch
    tags = ",".join(f"{k}={v}" for k, v in labels.items())
    return g.run("compute", "tpus", "queued-resources", "create", name, f"--node-id={name}",
                 f"--accelerator-type={la.tpu_accelerator}",
                 f"--runtime-version={la.tpu_runtime}", *g.where(),
                 *(["--spot"] if la.tpu_spot else []), f"--labels={tags}")


def delete(g: Gcloud, name: str) -> subprocess.CompletedProcess:
    """Delete a queued resource and its TPU VMs (gone already counts as deleted)."""
    out = g.run("compute", "tpus", "queued-resources", "delete", name, *g.where(), "--force",
                "--quiet")
    if out.returncode and classify(out.stderr) == "not_found":
        return subprocess.CompletedProcess(out.args, 0, out.stdout, out.stderr)
    return out


def quota_error(g: Gcloud, name: str, message: str) -> TinyscaleError:
    la = g.launch
    return TinyscaleError(
        f"creating {name} failed on quota ({message}): launch.tpu_slots={la.tpu_slots} slices "
        f"of launch.tpu_accelerator={la.tpu_accelerator} in launch.tpu_zone={la.tpu_zone} "
        "need more quota than the project has; ask for more (console: IAM & Admin > Quotas) "
        "or use fewer slots, a smaller accelerator or another zone.")


def refused_error(g: Gcloud, name: str, message: str) -> TinyscaleError:
    la = g.launch
    return TinyscaleError(
        f"creating {name} was refused ({message}): check launch.tpu_zone={la.tpu_zone}, "
        f"launch.tpu_accelerator={la.tpu_accelerator}, launch.tpu_runtime={la.tpu_runtime} "
        f"and launch.tpu_project={la.tpu_project!r} (and `gcloud auth list`).")
