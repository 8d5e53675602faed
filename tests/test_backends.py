"""The SLURM backend on a real single-node cluster: submits, resubmits, a job cancelled
mid-run then submitted again, and runs trained by two processes (two tasks of one array
task, jax.distributed): a packed group and a run alone, and one task killed mid-run (the
Cloud TPU backend: tests/test_tpu.py)."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from tests.conftest import held, run_cli
from tests.test_launch import TINY, states
from tinyscale.train.rundir import RunDir


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
    # one shape, three seeds: the test is of the backend, and one program serves the runs
    result = run_cli("sweep", "run", TINY + ":seeds3", "--sweep-dir", str(sweep_dir),
                     "--backend", "slurm", env=slurm_env)
    assert result.returncode == 0, result.stderr
    assert "submitted SLURM job" in result.stderr
    script = (sweep_dir / "slurm" / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0-2%2" in script and "srun " in script
    deadline = time.time() + 600
    while time.time() < deadline:
        if all(s.get("state") == "done" for s in states(sweep_dir).values()) if all(
                (sweep_dir / "runs" / n / "state.json").exists()
                for n in ("s0-d32-L1-h2", "s1-d32-L1-h2", "s2-d32-L1-h2")) else False:
            break
        time.sleep(2)
    else:
        pytest.fail("SLURM runs did not finish:\n" + cluster.logs())
    for name, state in states(sweep_dir).items():
        assert state["attempts"] == 1, name  # each trained exactly once
    logs = list((sweep_dir / "slurm").glob("*.out"))
    assert len(logs) == 3
    # the data prepared once, by the submit, before any task started: no task prepares it
    assert "tokenizer" in result.stderr, result.stderr
    assert not [log.name for log in logs if "tokenizer" in log.read_text()]
    again = run_cli("sweep", "run", TINY + ":seeds3", "--sweep-dir", str(sweep_dir),
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
    with held(run):
        result = run_cli("sweep", "run", TINY + ":1", "--sweep-dir", str(sweep_dir),
                         "--backend", "slurm", env={**env, "PATH": "/nonexistent"})
        assert result.returncode == 0, result.stderr  # sbatch was never needed
        assert "1 run(s) being trained now" in result.stderr
        assert not (sweep_dir / "slurm").exists()


def _job(sweep_dir, which: int = -1) -> str:
    return json.loads((sweep_dir / "slurm" / "jobs.json").read_text())[which]["job"]


def _wait_job_end(job: str, slurm_env: dict, cluster, deadline: float) -> list[tuple]:
    """Wait until every task of `job` has left the queue; (array task, JobState, ExitCode)
    of each, from slurmctld's record of the ended job."""
    env = {**os.environ, **slurm_env}
    while subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True,
                         text=True).stdout.strip():
        assert time.time() < deadline, f"job {job} did not end:\n" + cluster.logs()
        time.sleep(0.2)
    out = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True,
                         text=True, check=True).stdout
    return sorted(re.search(r"ArrayTaskId=(\S+).*JobState=(\S+).*ExitCode=(\S+)", line).groups()
                  for line in out.splitlines())


def _processes(log) -> dict[int, int]:
    """{process index: pid} of the processes that say, in a task's log, they train."""
    found = re.findall(r"process (\d)/2 \(\S+:(\d+)\): training", log.read_text())
    return {int(i): int(pid) for i, pid in found}


@pytest.mark.slow
def test_two_tasks_train_a_packed_group_and_a_run_alone_together(env, cluster, tmp_path):
    """launch.slurm_tasks_per_node=2 and launch.pack=2 over three runs of one shape: two
    array tasks, a packed pair and a run alone, each one jax.distributed program of two
    processes (the node's two CPUs): both processes of each say what they train, every run
    is done once (the pair as one program), and both tasks exit 0."""
    sweep_dir, slurm_env = tmp_path / "sweep", {**env, "SLURM_CONF": cluster.conf}
    result = run_cli("sweep", "run", TINY + ":pack3", "--sweep-dir", str(sweep_dir),
                     "--backend", "slurm", "--config.launch.pack=2",
                     "--config.launch.slurm_tasks_per_node=2", env=slurm_env)
    assert result.returncode == 0, result.stderr
    assert "3 runs (0-2) in 2 array tasks" in result.stderr
    script = (sweep_dir / "slurm" / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --ntasks-per-node=2" in script
    assert '0) indices="0 2" ;;' in script
    ended = _wait_job_end(_job(sweep_dir), slurm_env, cluster, time.time() + 300)
    assert ended == [("0", "COMPLETED", "0:0"), ("1", "COMPLETED", "0:0")], ended
    runs = json.loads((sweep_dir / "sweep.json").read_text())["runs"]
    names = {r["index"]: r["name"] for r in runs}
    for task, trained in (("0", [names[0], names[2]]), ("1", [names[1]])):
        log = next((sweep_dir / "slurm").glob(f"*_{task}.out"))
        assert sorted(_processes(log)) == [0, 1], log.read_text()[-3000:]
        assert f"training {', '.join(trained)}" in log.read_text()
    done = states(sweep_dir)
    assert all(s["state"] == "done" and s["attempts"] == 1 for s in done.values()), done
    assert done[names[0]]["packed_with"] == [names[2]] and "packed_with" not in done[names[1]]


@pytest.mark.slow
def test_a_killed_task_ends_its_peer_and_the_run_resumes(env, cluster, tmp_path):
    """One run trained by two tasks; once it has passed a checkpoint, process 1 is killed
    (-9). Process 0 exits non-zero by itself: at once when its next collective fails, or,
    if it was waiting in a checkpoint's barrier, when the coordination service declares
    process 1 dead (distributed.heartbeat_timeout_s, 10 s here). The job ends, the run is
    left unlocked with its checkpoint, and submitting again resumes it to done (two
    processes, exit 0, each step logged once)."""
    from tests.test_tpu import _metrics, _saved
    heartbeat = 10
    sweep_dir, slurm_env = tmp_path / "sweep", {**env, "SLURM_CONF": cluster.conf}
    args = ("sweep", "run", TINY + ":1", "--sweep-dir", str(sweep_dir), "--backend", "slurm",
            "--config.train.steps=100", "--config.train.checkpoint_every=20",
            "--config.eval.at_end=False", "--config.launch.slurm_tasks_per_node=2",
            f"--config.distributed.heartbeat_timeout_s={heartbeat}")
    assert run_cli(*args, env=slurm_env).returncode == 0
    run, deadline = sweep_dir / "runs" / "d16-L1-h2", time.time() + 300
    # typically a few steps past the first checkpoint: in a step's collective, far from
    # the next save's barrier
    while not (_metrics(run) and 0 < _saved(run) < _metrics(run)[-1]["step"] < 80):
        assert time.time() < deadline, "no step past a checkpoint:\n" + cluster.logs()
        time.sleep(0.02)
    log = next((sweep_dir / "slurm").glob("*.out"))
    pids = _processes(log)
    os.kill(pids[1], signal.SIGKILL)
    began = time.time()
    ended = _wait_job_end(_job(sweep_dir), slurm_env, cluster, began + 120)
    took, text = time.time() - began, log.read_text()
    assert took < heartbeat + 10, f"process 0 outlived its dead peer by {took:.0f} s"
    assert ended[0][1] == "FAILED", ended
    assert "task 1: Killed" in text, text[-3000:]
    assert re.search(r"task 0: (Exited with exit code [1-9]|Aborted)", text), text[-3000:]
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    stopped = states(sweep_dir)["d16-L1-h2"]
    assert stopped["state"] in ("failed", "running") and stopped["attempts"] == 1, stopped
    assert RunDir(str(run)).lock_owner(600) is None
    saved = _saved(run)
    assert saved > 0
    print(f"\nprocess 0 ended {took:.1f} s after process 1 was killed")

    again = run_cli(*args, env=slurm_env)
    assert again.returncode == 0 and "submitted SLURM job" in again.stderr, again.stderr
    ended = _wait_job_end(_job(sweep_dir), slurm_env, cluster, time.time() + 300)
    assert ended == [("0", "COMPLETED", "0:0")], ended
    resumed = next(p for p in (sweep_dir / "slurm").glob("*.out") if p != log)
    assert sorted(_processes(resumed)) == [0, 1]
    assert re.search(rf"resuming \S+ from step {saved}\n", resumed.read_text()), \
        resumed.read_text()[-3000:]
    final = states(sweep_dir)["d16-L1-h2"]
    assert final["state"] == "done" and final["attempts"] == 2, final
    assert [m["step"] for m in _metrics(run)] == list(range(5, 105, 5))


def test_the_job_of_a_slurm_step_comes_from_its_environment(monkeypatch):
    """Inside `srun` with several tasks: the step's first node, a port from the job id
    (an array task has its own), the task's rank; the batch script itself (no step) and a
    one-task step join nothing."""
    from tinyscale import parallel
    for name, first in (("node001", "node001"), ("gpu[003-004,9],cpu1", "gpu003"),
                        ("rack[1-2]-n[01-04],x", "rack1-n01"), ("a-b[7]", "a-b7")):
        assert parallel.first_host(name) == first
    for key in ("SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "JAX_COORDINATOR_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[003-004]")
    assert parallel.slurm_job() is None  # the batch script: one process
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "gpu[003-004]")
    monkeypatch.setenv("SLURM_JOB_ID", "4100")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert parallel.slurm_job() == ("gpu003:61444", 4, 3)
    monkeypatch.setenv("JAX_COORDINATOR_PORT", "9000")
    assert parallel.slurm_job() == ("gpu003:9000", 4, 3)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert parallel.slurm_job() is None
