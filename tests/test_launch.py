"""Sweep files, the plan, and the local, SLURM and Cloud TPU backends."""

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_cli

TINY = os.path.join(ROOT, "tests", "data", "tiny_sweep.py")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Environment for launcher subprocesses: a shared, pre-prepared data cache."""
    cache = str(tmp_path_factory.mktemp("cache"))
    env = {"TINYSCALE_TEST_CACHE": cache}
    result = run_cli("data", "prepare", "--config", os.path.join(ROOT, "sweeps",
                     "quickstart.py") + ":smoke", f"--config.data.cache_dir={cache}")
    assert result.returncode == 0, result.stderr
    return env


def read_states(runs_dir):
    out = []
    for path in runs_dir.glob("*/state.json") if runs_dir.exists() else []:
        try:
            out.append(json.loads(path.read_text()))
        except ValueError:
            pass
    return out


def all_metrics(runs_dir):
    out = []
    for path in runs_dir.glob("*/metrics.jsonl") if runs_dir.exists() else []:
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def states(sweep_dir):
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    return {r["name"]: json.loads((sweep_dir / "runs" / r["name"] / "state.json").read_text())
            for r in sweep["runs"]}


BAD_SWEEPS = [
    ("def get_config(:\n", "syntax error"),
    ("from tinyscale.config import get_config\n"
     "def sweep():\n    return [{'model.d_modle': 64}]\n", "model.d_modle"),
    ("from tinyscale.config import get_config\n"
     "def sweep():\n    return [{'model.d_model': 64}, {'model.d_model': 65}]\n",
     "run d65: config.model.n_heads"),
    ("from tinyscale.config import get_config\ndef sweep():\n    return []\n", "no runs"),
    ("from tinyscale.config import get_config\n"
     "def sweep():\n    return [{'model.d_model': 64}, {'model.d_model': 64}]\n", "duplicate"),
]


@pytest.mark.parametrize("source, message", BAD_SWEEPS)
def test_malformed_sweep_is_reported_before_launching(tmp_path, source, message):
    path = tmp_path / "bad_sweep.py"
    path.write_text(source)
    result = run_cli("sweep", "run", str(path), "--sweep-dir", str(tmp_path / "sweep"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "sweep").exists()


def test_paper_plan_marks_the_released_models():
    result = run_cli("sweep", "plan", os.path.join(ROOT, "sweeps", "tinystories_paper.py"))
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("d")]
    assert len(rows) == 30
    marked = [line for line in rows if "<- TinyStories" in line]
    assert len(marked) == 7
    assert any("TinyStories-1M shape (3,745,984 params" in line for line in marked)
    assert "30 runs" in result.stdout


@pytest.mark.parametrize("name", ["quickstart.py", "one_vs_deep.py", "cpu_study.py"])
def test_shipped_sweeps_plan(name):
    result = run_cli("sweep", "plan", os.path.join(ROOT, "sweeps", name))
    assert result.returncode == 0, result.stderr
    assert " runs; " in result.stdout


@pytest.mark.slow
def test_local_sweep_survives_two_launcher_kills(env, tmp_path):
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "tinyscale.cli", "sweep", "run", TINY, "--sweep-dir",
           str(sweep_dir)]
    runs_dir = sweep_dir / "runs"

    def in_training():  # some run has logged a step in this launch's lifetime
        return any(int(m.get("step", 0)) >= 10 for m in all_metrics(runs_dir))

    def one_done_and_another_training():
        states_now = [s.get("state") for s in read_states(runs_dir)]
        return "done" in states_now and "running" in states_now
    for event in (in_training, one_done_and_another_training):
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 600
        while not event():
            assert proc.poll() is None and time.time() < deadline, event.__name__
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    result = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for name, state in states(sweep_dir).items():
        assert state["state"] == "done", name
        metrics = [json.loads(x) for x in
                   (sweep_dir / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        steps = [m["step"] for m in metrics]
        assert steps == sorted(set(steps)) and steps[-1] == 30, (name, steps)
        assert (sweep_dir / "runs" / name / "eval.json").exists()
    again = run_cli("sweep", "run", TINY, "--sweep-dir", str(sweep_dir), env=env)
    assert again.returncode == 0 and "training" not in again.stderr  # nothing left to do
    status = run_cli("sweep", "status", str(sweep_dir))
    assert status.stdout.count(" done ") == 4 and "4 done" in status.stdout


def test_local_parallel_runs_at_once_on_disjoint_cores(env, tmp_path):
    sweep_dir = tmp_path / "parallel"
    result = run_cli("sweep", "run", TINY + ":2", "--sweep-dir", str(sweep_dir),
                     "--parallel", "2", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {s["state"] for s in states(sweep_dir).values()} == {"done"}
    lines = result.stderr.splitlines()
    started = [i for i, x in enumerate(lines) if ": training (slot" in x]
    first_done = next(i for i, x in enumerate(lines) if ": done in" in x)
    assert len(started) == 2 and max(started) < first_done  # both ran at the same time
    assert any("(slot 1)" in lines[i] for i in started)
    cores = [set(s["cores"]) for s in states(sweep_dir).values()]
    assert all(cores) and not cores[0] & cores[1], cores  # each on its own cores


def test_new_grid_points_are_added_and_changed_runs_refused(env, tmp_path):
    """Relaunching with more grid points trains only the new ones; the finished run is
    untouched. A run whose config changed is refused with the knob, exit 2."""
    sweep_dir = tmp_path / "sweep"
    first = run_cli("sweep", "run", TINY + ":1", "--sweep-dir", str(sweep_dir), env=env)
    assert first.returncode == 0, first.stderr
    done = (sweep_dir / "runs" / "d16-L1-h2" / "state.json").read_text()
    second = run_cli("sweep", "run", TINY + ":2", "--sweep-dir", str(sweep_dir), env=env)
    assert second.returncode == 0, second.stderr
    assert "d24-L1-h2: training" in second.stderr and "d16-L1-h2: training" not in \
        second.stderr
    assert (sweep_dir / "runs" / "d16-L1-h2" / "state.json").read_text() == done
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [(r["index"], r["name"]) for r in record["runs"]] == [(0, "d16-L1-h2"),
                                                                (1, "d24-L1-h2")]
    changed = run_cli("sweep", "run", TINY + ":2", "--sweep-dir", str(sweep_dir),
                      "--config.train.lr=0.001", env=env)
    assert changed.returncode == 2 and "config.train.lr=0.003, not 0.001" in changed.stderr
    assert changed.stderr.strip().count("\n") == 0


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


def test_plan_warns_when_the_compute_is_far_beyond_the_machine(tmp_path):
    path = tmp_path / "huge.py"
    path.write_text("from tinyscale.config import get_config\n"
                    "def sweep():\n    return [{'model.d_model': 2048, 'model.n_layers': 24, "
                    "'model.n_heads': 16, 'train.tokens': 10**11}]\n")
    result = run_cli("sweep", "plan", str(path), "--config.output.peak_flops=1e11")
    assert result.returncode == 0, result.stderr
    assert "years of training" in result.stdout and "warning: that is far beyond" in \
        result.stdout
    small = run_cli("sweep", "plan", os.path.join(ROOT, "sweeps", "quickstart.py"))
    assert "warning" not in small.stdout and "of training" in small.stdout


def test_status_shows_the_live_step_from_the_metrics(tmp_path):
    from tinyscale.launch import plan, status
    from tinyscale.launch.sweepdir import SweepDir
    sweep = SweepDir(str(tmp_path / "sweep"))
    sweep.create(TINY + ":1", *plan.expand(TINY + ":1", {}))
    run = sweep.rundir("d16-L1-h2")
    run.set_state("running", step=0, total_steps=30, attempts=1)
    run.metrics.write_text(json.dumps({"step": 12, "tokens": 6144, "train_loss": 4.5,
                                       "tokens_per_s": 900.0}) + "\n")
    line = next(x for x in status.render(str(tmp_path / "sweep")).splitlines()
                if x.startswith("d16-L1-h2"))
    assert "12/30" in line and "6.14K" in line and "4.500" in line


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
