"""The Cloud TPU backend against a `gcloud` that acts (tests/fake_gcloud.py): slots are
folders, their hosts local processes joined by jax.distributed; preemptions and crashes
kill them. And the set-up script the VMs run, run here with its TPU lines swapped."""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests import fake_gcloud
from tests.conftest import ROOT, held, run_cli, wait_for
from tests.test_launch import TINY, states
from tinyscale.launch.tpu_gcloud import sweep_label

XDG_CACHE = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")


def _metrics(run) -> list[dict]:
    try:
        return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    except (OSError, ValueError):
        return []


def _saved(run) -> int:
    """The newest finished checkpoint step of a run (0: none)."""
    try:
        return max((int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()),
                   default=0)
    except OSError:
        return 0


def _launch(sweep_dir, tpu_env, *extra, count=6, log=None):
    """`tinyscale sweep run TINY:count --backend tpu`, its stderr piped or written to
    `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "tinyscale.cli", "sweep", "run", f"{TINY}:{count}",
         "--sweep-dir", str(sweep_dir), "--backend", "tpu",
         f"--config.launch.tpu_python={sys.executable}", "--config.launch.tpu_poll_s=0.3",
         "--config.launch.stale_after_s=6", *extra],
        cwd=ROOT, env=tpu_env, stderr=open(log, "w") if log else subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_slices_of_two_hosts_survive_a_preemption_and_a_crash(env, fake_tpu, tmp_path):
    """4 runs of 50 steps, one shape, on 2 slots x 2 hosts; the test holds two runs'
    locks (as a second trainer would) and lets them go one at a time, so each event
    below finds work left, however fast the runs train. Once a run of slot 0 has a
    checkpoint and has gone past it, slot 0 is preempted (its processes killed,
    SUSPENDED; no capacity until the test gives it). Then the same for a run of slot 1,
    whose workers are killed while its VM stays ACTIVE (only their heartbeats tell).
    Every run ends done once, evaluated; the killed runs resumed from their checkpoints;
    no step was trained by two workers."""
    root, tpu_env = fake_tpu()
    sweep_dir, log = tmp_path / "sweep", tmp_path / "launcher.log"
    runs = sweep_dir / "runs"
    slots = [f"tinyscale-sweep-{i}" for i in range(2)]
    held_runs = ["s2-d32-L1-h2", "s3-d32-L1-h2"]  # index 3: slot 1's share

    def past_a_checkpoint(slot):
        def check():
            for run in runs.glob("*"):
                m = _metrics(run)
                if run.name not in hit and m and \
                        m[-1].get("worker", "").startswith(f"{slots[slot]}-w0:") and \
                        0 < _saved(run) < m[-1]["step"] < 40:
                    hit.append(run.name)
                    return True
            return False
        return check

    def said(text):
        return lambda: text in log.read_text()

    hit = []
    with held(*(runs / name for name in held_runs)) as release:
        launcher = _launch(sweep_dir, tpu_env, "--config.train.steps=50",
                           "--config.launch.tpu_slots=2", count="seeds4", log=log)
        wait_for(past_a_checkpoint(0), launcher, "a slot-0 run past a checkpoint", 600, 0.02)
        # no capacity for slot 0 until the slot-1 events are over: no new worker of slot
        # 0 resumes the run meanwhile (slot 1 may, its own run done: then slot 1 holds it)
        fake_gcloud.set_faults(str(root), no_capacity=[slots[0]])
        # returns once slot 0's processes are gone, their locks free
        subprocess.run(["gcloud", "preempt", slots[0]], env=tpu_env, check=True)
        status = run_cli("sweep", "status", str(sweep_dir), env=env).stdout.splitlines()
        row = next(x.split() for x in status if x.startswith(hit[0]))
        if row[1] == "running":  # resumed by slot 1 from its checkpoint (>= step 10)
            assert row[-1].startswith(slots[1]) and int(row[2].split("/")[0]) >= 10, status
        else:  # nobody holds it: stopped at its live step, past the checkpoint
            assert row[1] == "stopped" and int(row[2].split("/")[0]) > 10, row
        live = [x.split() for x in status if " running " in x  # slot 1's, if training now
                and x.split()[0] not in held_runs]
        assert all(r[-2] == "flock" and r[-1].startswith(slots[1]) for r in live), status
        release(1)  # slot 1, the only one working, takes it
        wait_for(past_a_checkpoint(1), launcher, "a slot-1 run past a checkpoint", 600, 0.02)
        subprocess.run(["gcloud", "kill-workers", slots[1]], env=tpu_env, check=True)
        wait_for(said("slot 1: workers stopped (heartbeat expired)"), launcher,
                 "slot 1's workers restarted", 600, 0.02)
        fake_gcloud.set_faults(str(root))  # capacity again: slot 0 is created again
        wait_for(lambda: len([c for c in fake_gcloud.calls(str(root))
                              if c[3:5] == ["create", slots[0]]]) == 2, launcher,
                 "slot 0 created again", 600, 0.02)
    assert launcher.wait(timeout=900) == 0, log.read_text()[-3000:]
    err = log.read_text()
    assert "is SUSPENDED (preempted); creating it again" in err

    final = states(sweep_dir)
    assert len(final) == 4 and {s["state"] for s in final.values()} == {"done"}, final
    twice = 0
    for name, state in final.items():
        lines = _metrics(runs / name)
        steps = [m["step"] for m in lines]
        twice += len(steps) - len(set(steps))
        assert steps == list(range(5, 55, 5)), (name, steps)
        workers = [m["worker"] for m in lines]
        changes = [i for i in range(1, len(workers)) if workers[i] != workers[i - 1]]
        evaluated = json.loads((runs / name / "eval.json").read_text())
        assert evaluated["step"] == 50 and "coherence" in evaluated, (name, evaluated)
        if name in hit:  # killed mid-run: resumed by another worker from a checkpoint
            assert state["attempts"] == 2 and len(changes) == 1, (name, state, workers)
            assert steps[changes[0]] > 10, (name, steps[changes[0]])
        else:
            assert state["attempts"] == 1 and not changes, (name, state, workers)
    assert twice == 0
    calls = fake_gcloud.calls(str(root))
    creates = [c for c in calls if c[3:4] == ["create"]]
    assert [c[4] for c in creates] == [slots[0], slots[1], slots[0]]
    assert creates[0][5:] == [f"--node-id={slots[0]}", "--accelerator-type=v5litepod-8",
                              "--runtime-version=v2-alpha-tpuv5-lite", "--zone=us-west4-a",
                              "--spot", f"--labels=tinyscale-sweep={sweep_label(sweep_dir)},"
                              "tinyscale-slot=0"]
    print(f"\nTPU stand-in: slots 2 x hosts 2, runs {len(final)}, preemptions 1, crashes 1, "
          f"runs resumed {len(hit)}, done once {len(final)}, steps trained twice {twice}")


def test_a_failing_run_is_retried_up_to_max_attempts(fake_tpu, tmp_path):
    """A run that fails (its loss diverges) is tried again by restarted workers until
    launch.max_attempts, then the launcher ends with exit 1 naming it."""
    _, tpu_env = fake_tpu(hosts=1)
    launcher = _launch(tmp_path / "sweep", tpu_env, "--config.train.lr=1e30",
                       "--config.launch.tpu_slots=1", "--config.launch.max_attempts=2",
                       count=1)
    _, err = launcher.communicate(timeout=600)
    assert launcher.returncode == 1, err[-3000:]
    state = json.loads((tmp_path / "sweep" / "runs" / "d16-L1-h2" / "state.json").read_text())
    assert state["state"] == "failed" and state["attempts"] == 2, state
    assert "non-finite loss" in state["last_error"]
    assert "1 failed after 2 attempts: d16-L1-h2" in err
    assert err.count("restarting them") == 1


def test_dry_run_prints_every_command_and_the_set_up_script(env, tmp_path):
    result = run_cli("sweep", "run", f"{TINY}:2", "--sweep-dir", "gs://b/s", "--backend",
                     "tpu", "--dry-run", "--config.launch.tpu_slots=2",
                     "--config.launch.tpu_project=p1", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("gcloud compute tpus queued-resources create") == 2
    assert "uv venv -q --allow-existing --python 3.11 ~/tinyscale-venv" in out
    assert '"jax[tpu]==' in out and "libtpu_releases.html" in out
    assert "apt-get install -y -qq liblink-grammar5 link-grammar-dictionaries-en" in out
    assert "--command=cd ~ && { nohup ~/tinyscale-venv/bin/python -m tinyscale.cli sweep " \
           "worker gs://b/s --slot 1 --slots 2 --tpu >> tinyscale-worker-1.log 2>&1 " \
           "< /dev/null & }" in out
    assert "--project=p1" in out


@pytest.mark.slow
def test_the_set_up_script_builds_an_environment_that_trains_and_evaluates(env, tmp_path,
                                                                          reference_lm_cache):
    """The script the VMs run, with its two TPU lines swapped (plain jax), run in a fresh
    home: its environment trains and evaluates a smoke run, with Link Grammar and the
    reference LM working."""
    from tinyscale.launch import tpu
    wheel = tpu.build_wheel()
    home = tmp_path / "home"
    reference_lm_cache(home / ".cache" / "tinyscale")  # the home's default cache
    (home / os.path.basename(wheel)).write_bytes(open(wheel, "rb").read())
    (home / "bootstrap.sh").write_text(tpu.bootstrap_script(wheel, accelerator="cpu"))
    # uv's and pip's downloads in this user's caches (their defaults outside the fresh
    # home), kept between runs: the first run downloads JAX and the rest (~7 s here)
    cache = os.environ.get("UV_CACHE_DIR") or os.path.join(XDG_CACHE, "uv")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    clean["PATH"] = ":".join(p for p in clean["PATH"].split(":") if ".venv" not in p)
    boot_env = {"PIP_CACHE_DIR": os.path.join(XDG_CACHE, "pip"), **clean, "HOME": str(home),
                "UV_CACHE_DIR": cache}
    boot = subprocess.Popen(["bash", "bootstrap.sh"], cwd=home, env=boot_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = boot.communicate(timeout=900)
    except BaseException:  # a timeout: the script and what it started (uv, pip); bash
        os.killpg(boot.pid, signal.SIGKILL)  # is not reaped yet, so the group is its own
        boot.communicate()
        raise
    assert boot.returncode == 0, out[-2000:] + err[-3000:]
    assert "tinyscale ready on cpu" in out
    python = str(home / "tinyscale-venv" / "bin" / "python")
    check = subprocess.run([python, "-c", (
        "from tinyscale.evals.linkgrammar import LinkGrammar\n"
        "from tinyscale.model.reference_lm import ReferenceLM\n"
        "g = LinkGrammar()\n"
        "print(g.parses('The cat sat on the mat.'), g.parses('mat the on sat cat The.'))\n"
        "ReferenceLM()\n")], cwd=home, env=boot_env, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.split() == ["True", "False"], check.stderr
    smoke = os.path.join(ROOT, "sweeps", "quickstart.py") + ":smoke"
    work = tmp_path / "run"
    trained = subprocess.run(
        [python, "-m", "tinyscale.cli", "train", "--config", smoke, "--workdir", str(work),
         f"--config.data.cache_dir={env['TINYSCALE_TEST_CACHE']}",
         "--config.output.peak_flops=1e11"],
        cwd=home, env=boot_env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = json.loads((work / "eval.json").read_text())
    assert result["step"] == 30 and "coherence" in result
    where = subprocess.run([python, "-c", "import tinyscale; print(tinyscale.__file__)"],
                           cwd=home, env=boot_env, capture_output=True, text=True)
    assert str(home / "tinyscale-venv") in where.stdout  # the wheel, not this checkout
