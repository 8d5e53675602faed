"""The SLURM backend on a real single-node cluster: submits, resubmits, and a job
cancelled mid-run then submitted again (the Cloud TPU backend: tests/test_tpu.py)."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_cli
from tests.test_launch import TINY, states


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real single-node SLURM cluster (slurmctld + slurmd), shared by this module."""
    from tests.slurm_cluster import Cluster, available
    if not available():
        pytest.skip("slurm-wlm is not installed (scripts/setup.sh installs it)")
    cluster = Cluster(str(tmp_path_factory.mktemp("slurm")))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_slurm_backend_against_real_daemons(env, cluster, tmp_path):
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


@pytest.mark.slow
def test_scancel_mid_run_then_resubmit_resumes_it(env, cluster, tmp_path):
    """A job cancelled (`scancel`) once its run has gone past a checkpoint; submitting
    again resumes the run from that checkpoint: done, each step logged once."""
    from tests.test_tpu import _metrics, _saved
    sweep_dir, slurm_env = tmp_path / "sweep", {**env, "SLURM_CONF": cluster.conf}
    args = ("sweep", "run", TINY + ":1", "--sweep-dir", str(sweep_dir), "--backend", "slurm",
            "--config.train.steps=300")
    assert run_cli(*args, env=slurm_env).returncode == 0
    run = sweep_dir / "runs" / "d16-L1-h2"
    deadline = time.time() + 600
    while not (_metrics(run) and 0 < _saved(run) < _metrics(run)[-1]["step"] < 250):
        assert time.time() < deadline, "no step past a checkpoint:\n" + cluster.logs()
        time.sleep(0.02)
    job = json.loads((sweep_dir / "slurm" / "jobs.json").read_text())[0]["job"]
    subprocess.run(["scancel", job], env={**os.environ, **slurm_env}, check=True)
    while subprocess.run(["squeue", "-h", "-j", job], env={**os.environ, **slurm_env},
                         capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline, "the job did not end:\n" + cluster.logs()
        time.sleep(0.5)
    stopped = states(sweep_dir)["d16-L1-h2"]
    assert stopped["state"] != "done", stopped
    again = run_cli(*args, env=slurm_env)
    assert again.returncode == 0 and "submitted SLURM job" in again.stderr, again.stderr
    while states(sweep_dir)["d16-L1-h2"].get("state") != "done":
        assert time.time() < deadline, "the resubmitted run did not finish:\n" + cluster.logs()
        time.sleep(1)
    lines = _metrics(run)
    steps, workers = [m["step"] for m in lines], [m["worker"] for m in lines]
    assert steps == list(range(5, 305, 5)), steps
    change = next(i for i in range(1, len(workers)) if workers[i] != workers[i - 1])
    assert steps[change] > 10 and len(set(workers)) == 2  # resumed, not restarted
    assert states(sweep_dir)["d16-L1-h2"]["attempts"] == 2


def test_slurm_resubmit_skips_a_run_whose_lock_is_held(env, tmp_path, monkeypatch):
    """A run being trained (its lock held by a live process) is never submitted again."""
    from tinyscale.launch import plan
    from tinyscale.launch.sweepdir import SweepDir
    monkeypatch.setenv("TINYSCALE_TEST_CACHE", env["TINYSCALE_TEST_CACHE"])
    sweep_dir = tmp_path / "sweep"
    SweepDir(str(sweep_dir)).create(TINY + ":1", *plan.expand(TINY + ":1", {}))
    run = sweep_dir / "runs" / "d16-L1-h2"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tinyscale.train.rundir import RunDir; "
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
