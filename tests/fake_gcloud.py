#!/usr/bin/env python3
"""A `gcloud` that acts: queued resources are folders, their hosts are local processes.
One file: it runs as a script for every gcloud call, so its verbs, fault modes and the
clean-up that knows its processes stay together.

Installed as `gcloud` on PATH by tests/test_tpu.py (`install`). State lives under
$FAKE_GCLOUD_ROOT/<name>/: `state` (the queued resource's state), `port` (its
jax.distributed coordinator port), `pgids` (the process groups its ssh commands
started), `labels.json` and `host-<i>/`, each host's home directory. Every call is
logged to $FAKE_GCLOUD_ROOT/calls.jsonl (its arguments), and what describe answered and
what delete found to $FAKE_GCLOUD_ROOT/events.jsonl ({"verb", "name", "state"}).

    queued-resources create NAME ...   a slot of $FAKE_TPU_HOSTS hosts (default 2), ACTIVE
                                       (or WAITING_FOR_RESOURCES, see no_capacity)
    queued-resources describe NAME     prints it as JSON (exit 1: NOT_FOUND), as gcloud
                                       does with --format=json
    queued-resources delete NAME       kills its processes, removes it (exit 1: NOT_FOUND)
    tpu-vm scp SRC NAME: --worker=all  copies SRC into every host's home
    tpu-vm ssh NAME --worker=all --command=CMD
                                       runs CMD with bash on every host at once, in its
                                       home, as that host: TINYSCALE_HOST=NAME-w<i>,
                                       TPU_WORKER_HOSTNAMES / TPU_WORKER_ID /
                                       JAX_COORDINATOR_PORT as a slice's hosts see them;
                                       returns when every host's command has
    preempt NAME                       (what Google does, not a gcloud verb) kills every
                                       process of the slot and marks it SUSPENDED
    kill-workers NAME                  (a crash) kills its processes, leaves it ACTIVE
Every verb that kills a slot's processes (delete, preempt, kill-workers) returns once they
are gone, as a slice is down once gcloud or the console says so: a lock or lease they
held is free by then. `kill_all(root)` ends every process a test started with this root
(launchers, gcloud calls, hosts): its clean-up, passed or failed.

Faults, from $FAKE_GCLOUD_ROOT/faults.json, read at every call (a test writes it when
it likes), with the error texts gcloud prints:
    {"describe_fails": [F, K]}  of each name's describe calls, F fail then K answer, and
                                again (a network error, an expired token, a rate limit
                                in turn)
    {"quota_slices": N}         create fails on quota while N queued resources exist
    {"preempted_at_start": [NAME]}  NAME is preempted by the first ssh that starts its
                                workers (the ssh fails as on a host that went away)
    {"no_capacity": true}       a queued resource waits in WAITING_FOR_RESOURCES, and
                                turns ACTIVE at the first describe once this is gone
                                (a list of names: only those wait)
    {"ssh_hangs": true}         ssh never returns (a host that does not answer): the
                                call writes the event {"verb": "ssh", "state": "hanging"}
                                and waits until it is killed
"""

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.environ.get("FAKE_GCLOUD_ROOT", "")


def install(bin_dir: str) -> str:
    """Put a `gcloud` running this file into `bin_dir`; the directory to prepend to PATH."""
    os.makedirs(bin_dir, exist_ok=True)
    path = os.path.join(bin_dir, "gcloud")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nexec {sys.executable} {os.path.abspath(__file__)} \"$@\"\n")
    os.chmod(path, 0o755)
    return bin_dir


def calls(root: str) -> list[list[str]]:
    with open(os.path.join(root, "calls.jsonl")) as f:
        return [json.loads(line) for line in f]


def events(root: str) -> list[dict]:
    try:
        with open(os.path.join(root, "events.jsonl")) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


def set_faults(root: str, **faults) -> None:
    """Write faults.json (atomically: the launcher's gcloud calls read it any time)."""
    with open(os.path.join(root, "faults.json.tmp"), "w") as f:
        json.dump(faults, f)
    os.replace(os.path.join(root, "faults.json.tmp"), os.path.join(root, "faults.json"))


def _faults() -> dict:
    try:
        with open(os.path.join(ROOT, "faults.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _event(verb: str, name: str, state: str) -> None:
    with open(os.path.join(ROOT, "events.jsonl"), "a") as f:
        f.write(json.dumps({"verb": verb, "name": name, "state": state}) + "\n")


def _resource(name: str) -> str:
    return f"projects/fake-project/locations/us-west4-a/queuedResources/{name}"


# what gcloud prints when describe fails for a reason that says nothing about the slice
TRANSIENT = [
    "ERROR: gcloud crashed (ConnectionError): HTTPSConnectionPool(host='tpu.googleapis.com', "
    "port=443): Max retries exceeded with url: /v2/{r} (Caused by NewConnectionError("
    "'Failed to establish a new connection: [Errno 101] Network is unreachable'))",
    "ERROR: (gcloud.compute.tpus.queued-resources.describe) There was a problem refreshing "
    "your current auth tokens: ('invalid_grant: Bad Request', {{'error': 'invalid_grant', "
    "'error_description': 'Bad Request'}})",
    "ERROR: (gcloud.compute.tpus.queued-resources.describe) RESOURCE_EXHAUSTED: Quota "
    "exceeded for quota metric 'Read requests' and limit 'Read requests per minute' of "
    "service 'tpu.googleapis.com' for consumer 'project_number:1234'.",
]
QUOTA = ("ERROR: (gcloud.compute.tpus.queued-resources.create) RESOURCE_EXHAUSTED: Quota "
         "limit 'TPUV5sLitepodPreemptiblePerProjectPerZoneForTPUAPI' has been exceeded. "
         "Limit: {n} in zone us-west4-a.")


def _slot(name: str) -> str:
    return os.path.join(ROOT, name)


def _read(name: str, what: str, default=""):
    try:
        with open(os.path.join(_slot(name), what)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return default


def _write(name: str, what: str, text: str, mode: str = "w") -> None:
    with open(os.path.join(_slot(name), what), mode) as f:
        f.write(text)


def processes(root: str, pgids: set[int] | None = None) -> list[int]:
    """The live processes started with FAKE_GCLOUD_ROOT=root (a test's launchers, gcloud
    calls and hosts' processes; a zombie counts as gone once its last thread is), only
    those in process groups `pgids` if given. Read from /proc: a pid or group number alone may
    be another's by now (pids are reused)."""
    mark = f"FAKE_GCLOUD_ROOT={root}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and _ours(int(entry), mark, pgids):
            found.append(int(entry))
    return found


def _ours(pid: int, mark: bytes, pgids: set[int] | None) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state, _, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
        if state in ("Z", "X"):
            # A killed process with threads: its first thread is a zombie at once, but
            # its files (and the flocks on them) are let go only when its last thread
            # has exited. Its memory, environment included, may be gone already: a
            # member of the slot's groups is still there while it has other threads.
            return pgids is not None and int(pgrp) in pgids and \
                len(os.listdir(f"/proc/{pid}/task")) > 1
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
    except OSError:  # gone, or not ours to read
        return False
    return mark in environ and (pgids is None or int(pgrp) in pgids)


def kill_all(root: str, pgids: set[int] | None = None, timeout: float = 120) -> None:
    """SIGKILL the live processes of `processes(root, pgids)` and return once they are
    gone. Each is pinned by a pidfd and checked again before the signal, so no other
    process that got its pid since is touched."""
    if not os.path.isdir("/proc"):  # no /proc (macOS): the groups, unchecked
        for pgid in pgids or ():
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return
    mark, deadline = f"FAKE_GCLOUD_ROOT={root}".encode(), time.time() + timeout
    while pids := processes(root, pgids):
        if time.time() > deadline:
            raise RuntimeError(f"processes {pids} of {root} outlived SIGKILL for {timeout} s")
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                if _ours(pid, mark, pgids):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            finally:
                os.close(fd)
        time.sleep(0.01)


def _kill(name: str) -> None:
    """Kill the slot's processes; return once they are gone."""
    kill_all(ROOT, {int(p) for p in _read(name, "pgids").split()})
    if os.path.isdir(_slot(name)):
        _write(name, "pgids", "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ssh(name: str, command: str) -> int:
    once = os.path.join(ROOT, f"preempted-at-start-{name}")  # outlives the slice's folder
    if name in _faults().get("preempted_at_start", []) and "nohup" in command \
            and not os.path.exists(once):
        open(once, "w").close()
        _kill(name)
        _write(name, "state", "SUSPENDED")
        print("ERROR: (gcloud.compute.tpus.tpu-vm.ssh) [/usr/bin/ssh] exited with return "
              "code [255].", file=sys.stderr)
        return 255
    if _read(name, "state") != "ACTIVE":
        print(f"ERROR: (gcloud.compute.tpus.tpu-vm.ssh) {name} is not ready", file=sys.stderr)
        return 255
    if _faults().get("ssh_hangs"):
        _event("ssh", name, "hanging")
        while True:
            time.sleep(3600)
    hosts = int(_read(name, "hosts", "1"))
    procs = []
    for i in range(hosts):
        home = os.path.join(_slot(name), f"host-{i}")
        env = {**os.environ, "HOME": home, "TINYSCALE_HOST": f"{name}-w{i}",
               "TPU_WORKER_ID": str(i), "JAX_COORDINATOR_PORT": _read(name, "port"),
               "TPU_WORKER_HOSTNAMES": ",".join(["127.0.0.1"] * hosts)}
        procs.append(subprocess.Popen(["bash", "-c", command], cwd=home, env=env,
                                      start_new_session=True, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
        _write(name, "pgids", f"{procs[-1].pid} ", "a")
    code = 0
    for i, proc in enumerate(procs):
        out, _ = proc.communicate()
        if out:
            print("\n".join(f"host-{i}: {line}" for line in out.splitlines()))
        code = max(code, proc.returncode)
    return code


def _create(name: str, args: list[str]) -> int:
    with open(os.path.join(ROOT, "lock"), "w") as lock:  # one create at a time: quota
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(_slot(name)):
            print(f"ERROR: (gcloud.compute.tpus.queued-resources.create) ALREADY_EXISTS: "
                  f"Resource '{_resource(name)}' already exists", file=sys.stderr)
            return 1
        quota = _faults().get("quota_slices")
        existing = [d for d in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, d))]
        if quota is not None and len(existing) >= quota:
            print(QUOTA.format(n=quota), file=sys.stderr)
            return 1
        os.makedirs(_slot(name))
    hosts = int(os.environ.get("FAKE_TPU_HOSTS", "2"))
    for i in range(hosts):
        os.makedirs(os.path.join(_slot(name), f"host-{i}"))
    labels = next((a[len("--labels="):] for a in args if a.startswith("--labels=")), "")
    _write(name, "labels.json", json.dumps(dict(x.split("=", 1) for x in labels.split(",")
                                                if x)))
    _write(name, "hosts", str(hosts))
    _write(name, "port", str(_free_port()))
    _write(name, "state", "WAITING_FOR_RESOURCES" if _no_capacity(name) else "ACTIVE")
    return 0


def _describe(name: str) -> int:
    count = _count(name)
    fail, answer = _faults().get("describe_fails", [0, 1])
    if (count - 1) % (fail + answer) < fail:
        _event("describe", name, "error")
        print(TRANSIENT[count % len(TRANSIENT)].format(r=_resource(name)), file=sys.stderr)
        return 1
    if not os.path.exists(_slot(name)):
        _event("describe", name, "NOT_FOUND")
        print(f"ERROR: (gcloud.compute.tpus.queued-resources.describe) NOT_FOUND: Resource "
              f"'{_resource(name)}' was not found", file=sys.stderr)
        return 1
    state = _read(name, "state")
    if state == "WAITING_FOR_RESOURCES" and not _no_capacity(name):
        state = "ACTIVE"
        _write(name, "state", state)
    _event("describe", name, state)
    node = {"acceleratorType": "v5litepod-8", "labels": json.loads(_read(name, "labels.json",
                                                                          "{}"))}
    print(json.dumps({"name": _resource(name), "state": {"state": state},
                      "tpu": {"nodeSpec": [{"nodeId": name, "node": node}]}}, indent=2))
    return 0


def _no_capacity(name: str) -> bool:
    held = _faults().get("no_capacity")
    return held is True or (isinstance(held, list) and name in held)


def _count(name: str) -> int:
    """This call's number among the describes of `name` (1, 2, ...)."""
    path = os.path.join(ROOT, f"describes-{name}")
    count = int(open(path).read()) + 1 if os.path.exists(path) else 1
    with open(path, "w") as f:
        f.write(str(count))
    return count


def main(args: list[str]) -> int:
    with open(os.path.join(ROOT, "calls.jsonl"), "a") as f:
        f.write(json.dumps(args) + "\n")
    verb = args[:4]
    if verb[:3] == ["compute", "tpus", "queued-resources"]:
        name = args[4]
        if verb[3] == "create":
            return _create(name, args)
        if verb[3] == "describe":
            return _describe(name)
        if verb[3] == "delete":
            if not os.path.exists(_slot(name)):
                print(f"ERROR: (gcloud.compute.tpus.queued-resources.delete) NOT_FOUND: "
                      f"Resource '{_resource(name)}' was not found", file=sys.stderr)
                return 1
            _event("delete", name, _read(name, "state"))
            _kill(name)
            shutil.rmtree(_slot(name), ignore_errors=True)
            return 0
    if verb == ["compute", "tpus", "tpu-vm", "scp"]:
        source, target = args[4], args[5]
        name = target.split(":")[0]
        for i in range(int(_read(name, "hosts", "1"))):
            shutil.copy(source, os.path.join(_slot(name), f"host-{i}"))
        return 0
    if verb == ["compute", "tpus", "tpu-vm", "ssh"]:
        command = next(a for a in args if a.startswith("--command="))[len("--command="):]
        return _ssh(args[4], command)
    if args[0] in ("preempt", "kill-workers"):
        _kill(args[1])
        if args[0] == "preempt":
            _write(args[1], "state", "SUSPENDED")
        return 0
    print(f"fake gcloud: unknown command {args}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
