"""The Cloud TPU backend: queued resources working a sweep stored on gs://.

`launch` creates `launch.tpu_slots` queued resources (`gcloud compute tpus
queued-resources create ... [--spot]`), waits until each is ACTIVE, ships this code
(`tpu-vm scp --worker=all`), installs it and starts `tinyscale sweep worker SWEEP_DIR
--slot i --slots K` on every worker (`tpu-vm ssh --worker=all`). It then watches: a
slot whose queued resource is preempted (SUSPENDED, FAILED, or gone) is deleted and
created again, and its worker resumes the unfinished runs from their checkpoints.
It returns when every run is done; `teardown` deletes the queued resources.
`--dry-run` prints every command instead of running it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tarfile
import tempfile
import time

from tinyscale.errors import TinyscaleError
from tinyscale.launch.sweepdir import SweepDir
from tinyscale.rundir import is_remote

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIVE = {"ACTIVE"}
WAITING = {"ACCEPTED", "PROVISIONING", "WAITING_FOR_RESOURCES", "CREATING"}


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
            raise TinyscaleError(f"`{shlex.join(cmd[:5])} ...` failed: "
                                 f"{out.stderr.strip().splitlines()[-1:] or out.returncode}")
        return out.stdout.strip()


def slot_names(sweep_dir: str, launch) -> list[str]:
    base = os.path.basename(str(sweep_dir).rstrip("/")).lower().replace("_", "-")
    return [f"{launch.tpu_prefix}-{base}-{i}" for i in range(launch.tpu_slots)]


def _package() -> str:
    """A tarball of this checkout's code (what the TPU VMs install)."""
    path = os.path.join(tempfile.mkdtemp(), "tinyscale.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for name in ("pyproject.toml", "README.md", "tinyscale", "analysis", "sweeps"):
            if os.path.exists(os.path.join(_ROOT, name)):
                tar.add(os.path.join(_ROOT, name), arcname=name,
                        filter=lambda t: None if "__pycache__" in t.name else t)
    return path


def create(g: Gcloud, name: str) -> None:
    la = g.launch
    g("compute", "tpus", "queued-resources", "create", name, f"--node-id={name}",
      f"--accelerator-type={la.tpu_accelerator}", f"--runtime-version={la.tpu_runtime}",
      *g.where(), *(["--spot"] if la.tpu_spot else []))


def state(g: Gcloud, name: str) -> str:
    out = g("compute", "tpus", "queued-resources", "describe", name, *g.where(),
            "--format=value(state.state)", check=False)
    return out or "MISSING"


def start_worker(g: Gcloud, name: str, sweep_dir: str, slot: int, tarball: str) -> None:
    g("compute", "tpus", "tpu-vm", "scp", tarball, f"{name}:tinyscale.tar.gz",
      "--worker=all", *g.where())
    install = ("mkdir -p tinyscale && tar xzf tinyscale.tar.gz -C tinyscale && "
               "pip install -q -e 'tinyscale[gcs]' 'jax[tpu]'")
    g("compute", "tpus", "tpu-vm", "ssh", name, "--worker=all", *g.where(),
      f"--command={install}")
    worker = (f"cd tinyscale && nohup python3 -m tinyscale.cli sweep worker {sweep_dir} "
              f"--slot {slot} --slots {g.launch.tpu_slots} > worker-{slot}.log 2>&1 &")
    g("compute", "tpus", "tpu-vm", "ssh", name, "--worker=all", *g.where(),
      f"--command={worker}")


def _wait_active(g: Gcloud, name: str, poll: float) -> None:
    while (s := state(g, name)) not in LIVE:
        if s not in WAITING:
            raise TinyscaleError(f"queued resource {name} is {s}: check quota and zone "
                                 "(config.launch.tpu_zone, tpu_accelerator).")
        time.sleep(poll)


def _all_done(sweep: SweepDir) -> bool:
    return all(sweep.rundir(r["name"]).state().get("state") in ("done", "failed")
               for r in sweep.runs())


def launch(sweep_dir: str, base, spec: str, dry_run: bool, say=print) -> int:
    if not is_remote(sweep_dir):
        say(f"warning: {sweep_dir} is not a gs:// path; TPU VMs cannot see it "
            "(fine only for testing this launcher).")
    g, poll = Gcloud(base.launch, dry_run, say), base.launch.tpu_poll_s
    names = slot_names(sweep_dir, base.launch)
    tarball = "tinyscale.tar.gz" if dry_run else _package()
    for slot, name in enumerate(names):
        create(g, name)
        if not dry_run:
            _wait_active(g, name, poll)
        start_worker(g, name, sweep_dir, slot, tarball)
        say(f"slot {slot}: {name} working {sweep_dir}")
    if dry_run:
        return 0
    sweep = SweepDir(sweep_dir)
    while not _all_done(sweep):
        time.sleep(poll)
        for slot, name in enumerate(names):
            s = state(g, name)
            if s in LIVE or s in WAITING:
                continue
            say(f"slot {slot}: {name} is {s} (preempted); creating it again")
            g("compute", "tpus", "queued-resources", "delete", name, *g.where(), "--force",
              "--quiet", check=False)
            create(g, name)
            _wait_active(g, name, poll)
            start_worker(g, name, sweep_dir, slot, tarball)
    say(f"{sweep_dir}: every run finished; `tinyscale sweep teardown {sweep_dir}` "
        "deletes the TPUs.")
    return 0


def teardown(sweep_dir: str, dry_run: bool, say=print) -> int:
    base = SweepDir(sweep_dir).config(0)
    g = Gcloud(base.launch, dry_run, say)
    for name in slot_names(sweep_dir, base.launch):
        g("compute", "tpus", "queued-resources", "delete", name, *g.where(), "--force",
          "--quiet", check=False)
        say(f"deleted {name}")
    return 0


