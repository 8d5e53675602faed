"""The SLURM and Cloud TPU backends: a real single-node SLURM cluster, the TPU launcher's
gcloud commands and preemption recovery, the hosts of one slice, resubmits."""

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_cli
from tests.test_launch import TINY, states


@pytest.mark.slow
def test_slurm_backend_against_real_daemons(env, tmp_path):
    from tests.slurm_cluster import Cluster, available
    if not available():
        pytest.skip("slurm-wlm is not installed (scripts/setup.sh installs it)")
    cluster = Cluster(str(tmp_path / "slurm"))
    cluster.start()
    try:
        sweep_dir = tmp_path / "sweep"
        slurm_env = {**env, "SLURM_CONF": cluster.conf}
        result = run_cli("sweep", "run", TINY + ":3", "--sweep-dir", str(sweep_dir),
                         "--backend", "slurm", env=slurm_env)
        assert result.returncode == 0, result.stderr
        assert "submitted SLURM job" in result.stderr
        script = (sweep_dir / "slurm" / "sweep.sbatch").read_text()
        assert "#SBATCH --array=0-2%2" in script and "srun " in script
        deadline = time.time() + 600
        while time.time() < deadline:
            if all(s.get("state") == "done" for s in states(sweep_dir).values()) if all(
                    (sweep_dir / "runs" / n / "state.json").exists()
                    for n in ("d16-L1-h2", "d24-L1-h2", "d32-L1-h2")) else False:
                break
            time.sleep(2)
        else:
            pytest.fail("SLURM runs did not finish:\n" + cluster.logs())
        for name, state in states(sweep_dir).items():
            assert state["attempts"] == 1, name  # each trained exactly once
        logs = list((sweep_dir / "slurm").glob("*.out"))
        assert len(logs) == 3
        again = run_cli("sweep", "run", TINY + ":3", "--sweep-dir", str(sweep_dir),
                        "--backend", "slurm", env=slurm_env)
        assert again.returncode == 0 and "nothing to submit" in again.stderr
    finally:
        cluster.stop()


FAKE_GCLOUD = """#!/usr/bin/env python3
import json, os, sys
log = os.environ["GCLOUD_LOG"]
with open(log, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args[:4] == ["compute", "tpus", "queued-resources", "describe"]:
    name = args[4]
    states = json.load(open(os.environ["GCLOUD_STATES"]))
    queue = states.get(name, ["ACTIVE"])
    print(queue.pop(0) if len(queue) > 1 else queue[0])
    json.dump(states, open(os.environ["GCLOUD_STATES"], "w"))
"""


def test_tpu_backend_commands_and_preemption_recovery(env, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD)
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
    log, state_file = tmp_path / "gcloud.log", tmp_path / "states.json"
    sweep_dir = tmp_path / "tpu-sweep"
    # slot 0: provisioning, active; then preempted once (SUSPENDED), then active again
    state_file.write_text(json.dumps({
        "tinyscale-tpu-sweep-0": ["PROVISIONING", "ACTIVE", "SUSPENDED", "ACTIVE"],
        "tinyscale-tpu-sweep-1": ["ACTIVE"]}))
    tpu_env = {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GCLOUD_LOG": str(log),
               "GCLOUD_STATES": str(state_file)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinyscale.cli", "sweep", "run", TINY + ":2", "--sweep-dir",
         str(sweep_dir), "--backend", "tpu", "--config.launch.tpu_slots=2",
         "--config.launch.tpu_zone=us-west4-a", "--config.launch.tpu_project=my-proj",
         "--config.launch.tpu_poll_s=0.05"],
        cwd=ROOT, env={**os.environ, **tpu_env}, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or log.read_text().count(
            '"delete"') < 1):
        time.sleep(0.1)
    for name in ("d16-L1-h2", "d24-L1-h2"):  # the workers finish the runs
        run = sweep_dir / "runs" / name
        run.mkdir(parents=True, exist_ok=True)
        (run / "state.json").write_text(json.dumps({"state": "done"}))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    where = ["--zone=us-west4-a", "--project=my-proj"]
    name = "tinyscale-tpu-sweep-0"
    create = ["compute", "tpus", "queued-resources", "create", name, f"--node-id={name}",
              "--accelerator-type=v5litepod-8", "--runtime-version=v2-alpha-tpuv5-lite",
              *where, "--spot"]
    assert calls[0] == create
    assert ["compute", "tpus", "tpu-vm", "scp"] == calls[3][:4]
    assert calls[3][5:] == [f"{name}:tinyscale.tar.gz", "--worker=all", *where]
    ssh = [c for c in calls if c[3] == "ssh" and c[4] == name]
    assert "pip install" in ssh[0][-1]
    assert ssh[1][-1].startswith("--command=cd tinyscale && nohup python3 -m tinyscale.cli "
                                 f"sweep worker {sweep_dir} --slot 0 --slots 2")
    deletes = [c for c in calls if c[3] == "delete"]
    assert deletes == [["compute", "tpus", "queued-resources", "delete", name, *where,
                        "--force", "--quiet"]]
    assert calls.count(create) == 2  # re-created after the preemption
    assert sum(1 for c in ssh if "--slot 0" in c[-1]) == 2  # and its worker restarted
    assert "preempted" in err
    dry = run_cli("sweep", "teardown", str(sweep_dir), "--dry-run", env=tpu_env)
    assert dry.stdout.count("queued-resources delete") == 2


@pytest.mark.slow
def test_hosts_of_one_slice_train_each_run_together(env, tmp_path, monkeypatch):
    """A TPU slice's hosts all run `sweep worker --slot 0`: process 0 picks each run and
    broadcasts it, so both processes train the same runs, and each run once."""
    from tests.test_multiprocess import free_port
    from tinyscale.launch import plan
    from tinyscale.launch.sweepdir import SweepDir
    sweep_dir = tmp_path / "slice"
    monkeypatch.setenv("TINYSCALE_TEST_CACHE", env["TINYSCALE_TEST_CACHE"])
    SweepDir(str(sweep_dir)).create(TINY + ":3", *plan.expand(TINY + ":3", {}))
    port = free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tinyscale.cli", "sweep", "worker", str(sweep_dir),
         "--slot", "0", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
         "--process-id", str(i)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, **env,
                        "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
        for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    final = states(sweep_dir)
    assert {s["state"] for s in final.values()} == {"done"} and len(final) == 3
    assert all(s["attempts"] == 1 for s in final.values())
    assert outs[0][1].count("slot 0: training") == 3
    for name in final:  # one writer per run: metrics continuous, each step once
        lines = (sweep_dir / "runs" / name / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(x)["step"] for x in lines]
        assert steps == sorted(set(steps)) and steps[-1] == 30


def test_slurm_resubmit_skips_a_run_whose_lock_is_held(env, tmp_path, monkeypatch):
    """A run being trained (its lock held by a live process) is never submitted again."""
    from tinyscale.launch import plan
    from tinyscale.launch.sweepdir import SweepDir
    monkeypatch.setenv("TINYSCALE_TEST_CACHE", env["TINYSCALE_TEST_CACHE"])
    sweep_dir = tmp_path / "sweep"
    SweepDir(str(sweep_dir)).create(TINY + ":1", *plan.expand(TINY + ":1", {}))
    run = sweep_dir / "runs" / "d16-L1-h2"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tinyscale.rundir import RunDir; "
         f"assert RunDir({str(run)!r}).acquire(600); print('held', flush=True); "
         "sys.stdin.read()"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_cli("sweep", "run", TINY + ":1", "--sweep-dir", str(sweep_dir),
                         "--backend", "slurm", env={**env, "PATH": "/nonexistent"})
        assert result.returncode == 0, result.stderr  # sbatch was never needed
        assert "1 run(s) being trained now" in result.stderr
        assert not (sweep_dir / "slurm").exists()
    finally:
        holder.communicate("")
