#!/usr/bin/env python3
"""A `gcloud` that acts: queued resources are folders, their hosts are local processes.

Installed as `gcloud` on PATH by tests/test_tpu.py (`install`). State lives under
$FAKE_GCLOUD_ROOT/<name>/: `state` (the queued resource's state), `port` (its
jax.distributed coordinator port), `pgids` (the process groups its ssh commands
started) and `host-<i>/`, each host's home directory. Every call is logged to
$FAKE_GCLOUD_ROOT/calls.jsonl.

    queued-resources create NAME ...   a slot of $FAKE_TPU_HOSTS hosts (default 2), ACTIVE
    queued-resources describe NAME     prints its state (exit 1: NOT_FOUND)
    queued-resources delete NAME       kills its processes, removes it
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
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

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


def _kill(name: str) -> None:
    for pgid in _read(name, "pgids").split():
        try:
            os.killpg(int(pgid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if os.path.isdir(_slot(name)):
        _write(name, "pgids", "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ssh(name: str, command: str) -> int:
    if _read(name, "state") != "ACTIVE":
        print(f"ERROR: (gcloud.compute.tpus.tpu-vm.ssh) {name} is not ready", file=sys.stderr)
        return 255
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


def main(args: list[str]) -> int:
    with open(os.path.join(ROOT, "calls.jsonl"), "a") as f:
        f.write(json.dumps(args) + "\n")
    verb = args[:4]
    if verb[:3] == ["compute", "tpus", "queued-resources"]:
        name = args[4]
        if verb[3] == "create":
            if os.path.exists(_slot(name)):
                print(f"ERROR: {name} already exists", file=sys.stderr)
                return 1
            os.makedirs(_slot(name))
            for i in range(int(os.environ.get("FAKE_TPU_HOSTS", "2"))):
                os.makedirs(os.path.join(_slot(name), f"host-{i}"))
            _write(name, "hosts", os.environ.get("FAKE_TPU_HOSTS", "2"))
            _write(name, "port", str(_free_port()))
            _write(name, "state", "ACTIVE")
            return 0
        if verb[3] == "describe":
            if not os.path.exists(_slot(name)):
                print(f"ERROR: NOT_FOUND: {name}", file=sys.stderr)
                return 1
            print(_read(name, "state"))
            return 0
        if verb[3] == "delete":
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
