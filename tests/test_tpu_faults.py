"""The Cloud TPU launcher under faults, against tests/fake_gcloud.py: describe failing on
every other call, the launcher killed and started again, slots preempted while one waits
for capacity, a quota refusal, and Ctrl-C. What must hold: no healthy slice deleted, a
relaunch adopts the sweep's slices, a slot waiting never holds up the others, every run
done once, no step trained twice."""

import json
import os
import pty
import signal
import subprocess
import sys
import time

import pytest

from tests import fake_gcloud
from tests.conftest import ROOT, held, wait_for
from tests.test_launch import TINY, states
from tests.test_tpu import _metrics
from tinyscale.launch import tpu_gcloud

SLOTS = [f"tinyscale-sweep-{i}" for i in range(2)]
HANG_S = 300  # upper bound on a wait for an event: a guard against hanging, never a timer


def _ignore_sigint():
    """preexec_fn: start with SIGINT ignored, as a job started with `&` by a script or
    any non-interactive shell does (Python then installs no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start(sweep_dir, tpu_env, log, *extra, count=4, stdin=subprocess.DEVNULL, out=None,
           sigint_ignored=False):
    """`tinyscale sweep run TINY:count --backend tpu` with its stderr written to `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "tinyscale.cli", "sweep", "run", f"{TINY}:{count}",
         "--sweep-dir", str(sweep_dir), "--backend", "tpu",
         f"--config.launch.tpu_python={sys.executable}", "--config.launch.tpu_poll_s=0.2",
         "--config.launch.stale_after_s=4", *extra],
        cwd=ROOT, env=tpu_env, stdin=stdin, stdout=out or subprocess.DEVNULL,
        stderr=open(log, "w"), text=True, preexec_fn=_ignore_sigint if sigint_ignored else None)


def _text(path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _ended(launcher, log, hang_s=HANG_S) -> int:
    """The launcher's exit code once it ends (`hang_s`: a guard against a hang, whose
    failure shows the launcher's log; the fixture fake_tpu then kills what is left)."""
    try:
        return launcher.wait(timeout=hang_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the launcher did not end within {hang_s} s; its log:\n{_text(log)[-3000:]}")


def _said(log, *texts):
    return lambda: all(t in _text(log) for t in texts)


def _worker_starts(calls, name):
    return [c for c in calls if c[3:5] == ["ssh", name] and "sweep worker" in c[-1]
            and "nohup" in c[-1]]


# real gcloud error texts (from issue threads and the API's documented states)
ERRORS = [
    ("ERROR: (gcloud.compute.tpus.queued-resources.describe) NOT_FOUND: Resource "
     "'projects/p/locations/us-west4-a/queuedResources/q' was not found", "not_found"),
    (fake_gcloud.QUOTA.format(n=16), "quota"),
    ("Quota 'TPUV5sPreemptibleLitepodPerProjectPerRegionForTPUAPI' exhausted. Limit 10000 "
     "in region us-west4", "quota"),
    ("ERROR: (gcloud.compute.tpus.tpu-vm.create) There is no more capacity in the zone "
     "\"europe-west4-a\"; you can try in another zone where Cloud TPU Nodes are offered",
     "capacity"),
    ("ERROR: (gcloud.compute.tpus.queued-resources.create) INVALID_ARGUMENT: Accelerator "
     "type v5litepod-7 is not valid in zone us-west4-a", "refused"),
    ("ERROR: (gcloud.compute.tpus.queued-resources.create) ALREADY_EXISTS: Resource "
     "'projects/p/locations/z/queuedResources/q' already exists", "exists"),
    *[(text, "transient") for text in fake_gcloud.TRANSIENT],  # network, token, rate limit
    ("ERROR: (gcloud.compute.tpus.queued-resources.describe) UNAVAILABLE: The service is "
     "currently unavailable.", "transient"),
]


@pytest.mark.parametrize("stderr, kind", ERRORS)
def test_gcloud_errors_are_read_strictly(stderr, kind):
    assert tpu_gcloud.classify(stderr) == kind


@pytest.mark.slow
def test_relaunch_adopts_and_a_slot_waiting_for_capacity_holds_up_no_other(fake_tpu, tmp_path):
    """4 runs of one shape on 2 slots of 1 host, describe failing twice in every four
    calls throughout; the test holds two runs' locks (as a second trainer would), so
    work is left at every step below however fast the others train. The launcher is
    killed (SIGKILL) once both slots' workers beat; a second one adopts both slices (no
    create, no second worker). Both are then preempted, with no capacity for slot 0:
    slot 1 is re-created and trains a run let go while slot 0 still waits; once
    capacity comes slot 0 works too. Every run done once, no step trained twice, and
    only the preempted slices were ever deleted."""
    root, tpu_env = fake_tpu(hosts=1)
    fake_gcloud.set_faults(str(root), describe_fails=[2, 2])
    sweep_dir, first, second = tmp_path / "sweep", tmp_path / "first.log", tmp_path / "second.log"
    runs = sweep_dir / "runs"
    args = ("--config.launch.tpu_slots=2",)
    with held(runs / "s2-d32-L1-h2", runs / "s3-d32-L1-h2") as release:
        launcher = _start(sweep_dir, tpu_env, first, *args, count="seeds4")
        t0 = time.time()
        wait_for(lambda: len(list((sweep_dir / "workers").glob("slot*.json"))) == 2,
                 launcher, "both slots' workers", HANG_S, 0.02)
        launcher.kill()  # SIGKILL: no word to anyone
        launcher.wait()
        t_kill = time.time()
        fake_gcloud.set_faults(str(root), describe_fails=[2, 2], no_capacity=[SLOTS[0]])
        relaunched = len(fake_gcloud.calls(str(root)))
        launcher = _start(sweep_dir, tpu_env, second, *args, count="seeds4")
        wait_for(_said(second, "slot 0: adopted", "slot 1: adopted"), launcher,
                 "the slices adopted", HANG_S, 0.02)
        adopted = fake_gcloud.calls(str(root))[relaunched:]
        t_adopt = time.time()

        lines = sum(len(_metrics(run)) for run in runs.glob("*"))
        for name in SLOTS:
            subprocess.run(["gcloud", "preempt", name], env=tpu_env, check=True)
        preempted = len(fake_gcloud.calls(str(root)))
        wait_for(_said(second, f"slot 0: {SLOTS[0]} is WAITING_FOR_RESOURCES"), launcher,
                 "slot 0 waiting for capacity", HANG_S, 0.02)
        release(0)  # slot 1 re-created, set up and training again while slot 0 waits
        wait_for(lambda: sum(len(_metrics(run)) for run in runs.glob("*")) > lines,
                 launcher, "a run advancing after both slots were preempted", HANG_S, 0.02)
        assert (root / SLOTS[0] / "state").read_text() == "WAITING_FOR_RESOURCES"
        t_other = time.time()
        fake_gcloud.set_faults(str(root), describe_fails=[2, 2])  # capacity comes
        wait_for(lambda: len(_worker_starts(fake_gcloud.calls(str(root))[preempted:],
                                            SLOTS[0])),
                 launcher, "slot 0's workers started again", HANG_S, 0.02)
    assert _ended(launcher, second, 2 * HANG_S) == 0, _text(second)[-3000:]
    err = _text(second)

    # the relaunch created nothing and left the workers that were alive training
    assert not [c for c in adopted if c[3:4] == ["create"]], adopted
    for i, name in enumerate(SLOTS):
        if f"slot {i}: adopted {name}, its workers training" in err:
            assert not _worker_starts(adopted, name), (name, adopted)
    events = fake_gcloud.events(str(root))
    deleted = [e for e in events if e["verb"] == "delete"]
    assert sorted(e["name"] for e in deleted) == SLOTS and \
        {e["state"] for e in deleted} == {"SUSPENDED"}, deleted  # no healthy slice deleted
    creates = [c[4] for c in fake_gcloud.calls(str(root)) if c[3:4] == ["create"]]
    assert sorted(creates) == sorted(SLOTS * 2), creates
    failures = [e for e in events if e == {"verb": "describe", "name": e["name"],
                                          "state": "error"}]
    assert len(failures) >= 6 and "not read as a preemption, nothing deleted" in err
    final = states(sweep_dir)
    assert {s["state"] for s in final.values()} == {"done"} and len(final) == 4, final
    for name in final:
        steps = [m["step"] for m in _metrics(runs / name)]
        assert steps == list(range(5, 35, 5)), (name, steps)  # each step once
        assert json.loads((runs / name / "eval.json").read_text())["step"] == 30
    print(f"\nTPU faults: both working {t_kill - t0:.1f} s, adopted {t_adopt - t_kill:.1f} s, "
          f"slot 1 training while slot 0 waits {t_other - t_adopt:.1f} s, describe "
          f"failures {len(failures)}, deletes {len(deleted)} (all SUSPENDED)")


def test_a_slice_preempted_while_its_workers_start_is_created_again(fake_tpu, tmp_path):
    """The ssh that starts a slice's workers fails because the slice was preempted in the
    meantime (a spot VM can go at any moment): the launcher tries again once the next
    describe says SUSPENDED -- it deletes and creates the slice -- instead of ending,
    and the run is trained once."""
    root, tpu_env = fake_tpu(hosts=1)
    fake_gcloud.set_faults(str(root), preempted_at_start=[SLOTS[0]])
    log = tmp_path / "launcher.log"
    launcher = _start(tmp_path / "sweep", tpu_env, log, "--config.launch.tpu_slots=1",
                      count="seeds1")
    assert _ended(launcher, log) == 0, _text(log)[-3000:]
    err = _text(log)
    assert "setting up or starting its workers failed" not in err  # one restart: no budget
    assert f"{SLOTS[0]} is SUSPENDED (preempted); creating it again" in err, err
    creates = [c[4] for c in fake_gcloud.calls(str(root)) if c[3:4] == ["create"]]
    assert creates == [SLOTS[0], SLOTS[0]], creates
    final = states(tmp_path / "sweep")
    assert [s["state"] for s in final.values()] == ["done"] and \
        all(s["attempts"] == 1 for s in final.values()), final


def test_quota_is_one_line_naming_the_knob(fake_tpu, tmp_path):
    """Quota for one slice, two asked for: the launcher ends with exit 2 and one line
    naming launch.tpu_slots; with --delete-slots the slice it did create is deleted."""
    root, tpu_env = fake_tpu(hosts=1)
    fake_gcloud.set_faults(str(root), quota_slices=1)
    log = tmp_path / "launcher.log"
    launcher = _start(tmp_path / "sweep", tpu_env, log, "--config.launch.tpu_slots=2",
                      "--delete-slots", count=1)
    assert _ended(launcher, log) == 2, _text(log)
    err = _text(log)
    last = err.strip().splitlines()[-1]
    assert last.startswith("tinyscale: error: creating tinyscale-sweep-") and \
        "failed on quota (RESOURCE_EXHAUSTED: Quota limit" in last and \
        "launch.tpu_slots=2" in last and "launch.tpu_zone=us-west4-a" in last, err
    assert "Traceback" not in err
    assert f"deleted the TPU slices {', '.join(SLOTS)}." in err
    assert not [d for d in os.listdir(root) if (root / d).is_dir()]  # nothing left


@pytest.mark.slow
def test_ctrl_c_keeps_or_deletes_the_slices_as_documented(fake_tpu, tmp_path):
    """Ctrl-C (SIGINT) to the launcher of a run that would take long: off a terminal it
    keeps the slice, its worker training, and says so -- also when it was started with
    SIGINT ignored, as `&` in a script starts it; relaunched at a terminal it adopts the
    slice and asks, and 'y' deletes it; with --keep-slots it keeps it unasked."""
    root, tpu_env = fake_tpu(hosts=1)
    sweep_dir, name = tmp_path / "sweep", SLOTS[0]
    args = ("--config.train.steps=100000",)

    def interrupt(launcher, log, *then):
        wait_for(_said(log, *then), launcher, " and ".join(then), HANG_S, 0.02)
        launcher.send_signal(signal.SIGINT)
        return launcher

    def worker_alive():
        pgids = {int(p) for p in _text(root / name / "pgids").split()}
        return bool(pgids and fake_gcloud.processes(str(root), pgids))

    def deletes():
        return [e for e in fake_gcloud.events(str(root)) if e["verb"] == "delete"]

    log = tmp_path / "1.log"
    launcher = _start(sweep_dir, tpu_env, log, *args, count=1, sigint_ignored=True)
    wait_for(lambda: list((sweep_dir / "workers").glob("slot0-*.json")), launcher,
             "the worker's heartbeat", HANG_S, 0.02)
    assert _ended(interrupt(launcher, log, f"{name} working"), log) == 130, _text(log)
    assert f"interrupted: left the TPU slices {name} running (not a terminal, so not " \
           f"asked; --delete-slots deletes them)" in _text(log)
    assert f"`tinyscale sweep teardown {sweep_dir}` deletes them." in _text(log)
    assert worker_alive() and not deletes()

    calls = len(fake_gcloud.calls(str(root)))
    log, answers = tmp_path / "2.log", tmp_path / "2.out"
    master, terminal = pty.openpty()
    launcher = _start(sweep_dir, tpu_env, log, *args, count=1, stdin=terminal,
                      out=open(answers, "w"))
    interrupt(launcher, log, f"slot 0: adopted {name}, its workers training")
    wait_for(lambda: "[y/N]" in _text(answers), launcher, "the question", HANG_S, 0.02)
    os.write(master, b"y\n")
    assert _ended(launcher, log) == 130, _text(log)
    os.close(master)
    os.close(terminal)
    assert f"delete the TPU slices {name} (their workers stop)? [y/N]" in _text(answers)
    assert f"deleted the TPU slices {name}." in _text(log)
    adopted = fake_gcloud.calls(str(root))[calls:]
    assert not [c for c in adopted if c[3:4] == ["create"]] and \
        not _worker_starts(adopted, name), adopted
    assert deletes() == [{"verb": "delete", "name": name, "state": "ACTIVE"}]
    assert not worker_alive()

    log = tmp_path / "3.log"
    launcher = _start(sweep_dir, tpu_env, log, *args, "--keep-slots", count=1)
    assert _ended(interrupt(launcher, log, f"{name} working"), log) == 130, _text(log)
    assert f"interrupted: left the TPU slices {name} running: their workers go on" in \
        _text(log)
    assert (root / name / "state").read_text() == "ACTIVE"
    subprocess.run(["gcloud", "compute", "tpus", "queued-resources", "delete", name],
                   env=tpu_env, check=True)


def test_ctrl_c_while_a_gcloud_call_hangs_ends_the_launcher_and_the_call(fake_tpu, tmp_path):
    """Ctrl-C while a slot's background action waits on a `gcloud ... ssh` that never
    returns (a host that does not answer), to a launcher started with SIGINT ignored:
    it ends with exit 130, keeps the slice and says so, and no gcloud call outlives it."""
    root, tpu_env = fake_tpu(hosts=1)
    fake_gcloud.set_faults(str(root), ssh_hangs=True)
    log = tmp_path / "launcher.log"
    launcher = _start(tmp_path / "sweep", tpu_env, log, count=1, sigint_ignored=True)
    hanging = {"verb": "ssh", "name": SLOTS[0], "state": "hanging"}
    wait_for(lambda: hanging in fake_gcloud.events(str(root)), launcher, "an ssh hanging",
             HANG_S, 0.02)
    launcher.send_signal(signal.SIGINT)
    assert _ended(launcher, log) == 130, _text(log)
    assert f"interrupted: left the TPU slices {SLOTS[0]} running (not a terminal, so " \
           "not asked" in _text(log) and "Traceback" not in _text(log), _text(log)
    assert fake_gcloud.processes(str(root)) == []  # the hung ssh ended with the launcher


def test_slice_flags_apply_to_the_tpu_backend_only(refused, tmp_path):
    result = refused("sweep", "run", f"{TINY}:1", "--sweep-dir", tmp_path / "s",
                     "--keep-slots")
    assert result.returncode == 2
    assert result.stderr.strip() == "tinyscale: error: --keep-slots applies to --backend " \
                                    "tpu only: drop it."
    both = refused("sweep", "run", f"{TINY}:1", "--sweep-dir", tmp_path / "s", "--backend",
                   "tpu", "--keep-slots", "--delete-slots")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
