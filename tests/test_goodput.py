"""Goodput: each attempt's time by category, steps lost to a kill, a sweep's capacity,
`sweep status`'s line and the report's panel (tinyscale/train/goodput.py,
tinyscale/launch/goodput.py)."""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest

from analysis import report
from tests.conftest import ROOT, SMOKE, run_cli, wait_for
from tinyscale.launch import goodput as sweep_goodput
from tinyscale.train import goodput
from tinyscale.train.rundir import RunDir

TINY = os.path.join(ROOT, "tests", "data", "tiny_sweep.py")


def attempt(first, last, train, wall=None, start=0.0, **seconds):
    seconds = {c: 0.0 for c in goodput.CATEGORIES} | {"train": train} | seconds
    wall = sum(seconds.values()) if wall is None else wall
    return {"first_step": first, "last_step": last, "seconds": seconds, "wall_s": wall,
            "start": start, "end": start + wall}


def test_lost_steps_are_those_a_later_attempt_resumed_before():
    # killed at 15, resumed from 10: steps 11..15 were trained twice, at 2 s a step
    done = [attempt(1, 15, train=30.0), attempt(11, 30, train=40.0)]
    assert goodput.lost(done) == [(5, 10.0), (0, 0.0)]
    # a newer checkpoint (20) was damaged: the third attempt went back to 10, so the
    # first loses 21..25 and 11..20 too (15 steps), the second all it trained (21..23)
    fell_back = [attempt(1, 25, train=25.0), attempt(21, 23, train=6.0),
                 attempt(11, 30, train=20.0)]
    assert goodput.lost(fell_back) == [(15, 15.0), (3, 6.0), (0, 0.0)]
    # killed before its first step (startup only), then resumed: nothing lost by it
    assert goodput.lost([attempt(11, 10, train=0.0, startup=5.0),
                         attempt(11, 20, train=9.0)]) == [(0, 0.0), (0, 0.0)]
    summary = goodput.run_summary(done)
    assert summary["lost"] == 10.0 and summary["lost_steps"] == 5 and summary["wall"] == 70.0


def test_sweep_capacity_idle_and_the_status_line():
    # 2 slots for 170 s, the first 10 s preparing data; inside: one run's two attempts
    # (150 s, the first lost 10 s: killed at 15, resumed from 10); outside every launch:
    # another run's 50 s attempt (idle unknown there)
    launches = [{"slots": 2, "start": 1000.0, "ready": 1010.0, "end": 1170.0}]
    inside = [attempt(1, 15, train=30.0, start=1010.0, startup=10.0, compile=5.0),
              attempt(11, 30, train=60.0, start=1056.0, eval=15.0, checkpoint=10.0,
                      data=5.0, startup=15.0)]
    outside = [attempt(1, 30, train=40.0, start=5000.0, startup=10.0)]
    s = sweep_goodput.summarize([inside, outside], launches)
    assert s["wall"] == 200.0 and s["unrecorded"] == 50.0 and s["lost"] == 10.0
    assert s["startup"] == 35.0 + 20.0  # the attempts' + 2 slots x 10 s of preparing
    assert s["idle"] == pytest.approx(340.0 - 20.0 - 150.0)
    assert s["capacity"] == pytest.approx(340.0 + 50.0)
    assert s["goodput"] == pytest.approx((130.0 - 10.0) / 390.0)
    assert sum(sweep_goodput.shares(s).values()) == pytest.approx(1.0)
    assert sweep_goodput.describe(s) == (
        "goodput 31% of 2 slots x 2m50s + 0m50s outside them: training 31%, compile 1%, "
        "eval 4%, data 1%, checkpoints 3%, startup 14%, lost 3%, idle 44% "
        "(trained outside `sweep run`: idle not known)")
    alone = sweep_goodput.summarize([outside], [])
    assert alone["capacity"] == 50.0 and alone["idle"] == 0.0
    assert sweep_goodput.describe(alone).startswith("goodput 80% of 0m50s of training processes")


def test_an_attempt_of_packed_runs_and_the_next_attempt_of_its_process(tmp_path):
    """K packed runs each hold the program's seconds / K; compilation is taken out of the
    interval it happened in; the process's next attempt starts where this one ended."""
    runs = [RunDir(tmp_path / name) for name in ("a", "b")]
    clock = goodput.Attempt(runs, enabled=True)
    clock.begin(0)
    jax.jit(lambda x: jnp.sin(x) * 3.25)(jnp.ones(7)).block_until_ready()  # compiles
    clock.charge("train")
    assert clock.seconds["compile"] > 0 and clock.seconds["train"] >= 0
    clock.flush(4)
    clock.close(5, "eval")
    a, b = goodput.read(runs[0]), goodput.read(runs[1])
    assert a == b and len(a) == 1 and a[0]["runs"] == 2
    record = a[0]
    assert (record["first_step"], record["last_step"]) == (1, 5)
    assert record["wall_s"] == pytest.approx(sum(clock.seconds.values()) / 2)
    assert sum(record["seconds"].values()) == pytest.approx(record["wall_s"])
    after = goodput.Attempt([RunDir(tmp_path / "c")], enabled=True)
    assert after.start == pytest.approx(record["end"])  # no second counted twice
    after.begin(0)
    after.close()
    assert goodput.read(runs[0]) == a  # another run's record is left alone


def metrics_step(workdir) -> int:
    steps = [m["step"] for m in RunDir(workdir).read_metrics()]
    return steps[-1] if steps else 0


def checkpoint_steps(workdir) -> list[int]:
    folder = workdir / "checkpoints"
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if folder.exists() \
        else []


def test_a_killed_run_loses_exactly_the_steps_past_its_checkpoint(smoke_cache, tmp_path):
    """SIGKILL once a step past the first checkpoint (10), and not itself a checkpoint's,
    is logged, at a moment the goodput record holds that step too (the process is
    stopped to look); the resumed
    run's record shows those steps lost, and each attempt's categories sum to its wall."""
    workdir = tmp_path / "run"
    args = ["train", "--config", SMOKE, "--workdir", str(workdir),
            f"--config.data.cache_dir={smoke_cache}", "--config.output.peak_flops=1e11",
            "--config.train.steps=200", "--config.eval.at_end=False"]
    began = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "tinyscale.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = 10
    while True:  # a saved checkpoint (an async save may finish steps after it began)
        wait_for(lambda seen=seen: checkpoint_steps(workdir) and metrics_step(workdir) > seen,
                 proc, f"a saved checkpoint and a step past {seen}")
        proc.send_signal(signal.SIGSTOP)
        killed_at, records = metrics_step(workdir), goodput.read(RunDir(workdir))
        saved = checkpoint_steps(workdir)
        if records and records[-1]["last_step"] == killed_at and killed_at % 10 \
                and saved[-1] < killed_at:
            break
        seen = killed_at  # between the metrics line and the record, or at a checkpoint
        proc.send_signal(signal.SIGCONT)
    proc.kill()
    proc.wait()
    resumed_from = saved[-1]
    assert 10 <= resumed_from < killed_at
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    first, second = goodput.read(RunDir(workdir))
    assert (first["first_step"], first["last_step"]) == (1, killed_at)
    assert (second["first_step"], second["last_step"]) == (resumed_from + 1, 200)
    assert began - 0.5 < first["start"] < began + 1.0  # the process's own start
    for a in (first, second):
        assert sum(a["seconds"].values()) == pytest.approx(a["wall_s"], abs=1e-6)
        assert a["end"] - a["start"] == pytest.approx(a["wall_s"], abs=1e-3)
        assert a["seconds"]["startup"] > 0.5 and a["seconds"]["compile"] > 0
        assert all(a["seconds"][c] > 0 for c in ("data", "train", "eval", "checkpoint"))
    (steps, seconds), after = goodput.lost([first, second])
    assert steps == killed_at - resumed_from and after == (0, 0.0)
    assert seconds > 0 and seconds == pytest.approx(
        steps * first["seconds"]["train"] / killed_at)


def test_sweep_status_and_the_report_show_goodput(env, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli("sweep", "run", TINY + ":1", "--sweep-dir", str(sweep_dir), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (launch,) = sweep_goodput.read_launches(sweep_dir)
    assert launch["slots"] == 1 and launch["start"] <= launch["ready"] <= launch["end"]
    (run,) = goodput.read(RunDir(sweep_dir / "runs" / "d16-L1-h2"))
    assert launch["start"] < run["start"] and run["end"] <= launch["end"] + 0.1
    assert run["seconds"]["eval"] > 0  # held-out loss, and the final evaluation
    status = run_cli("sweep", "status", str(sweep_dir))
    line = status.stdout.strip().splitlines()[-1]
    assert line.startswith("goodput ") and " of 1 slot x " in line, status.stdout
    shares = [int(part.rsplit(" ", 1)[1].rstrip("%")) for part in line.split(": ")[1].split(",")]
    assert [part.split()[0] for part in line.split(": ")[1].split(", ")] == list(
        sweep_goodput.SHOWN.values())
    assert abs(sum(shares) - 100) <= len(shares) // 2 and shares[-1] >= 0
    path = report.build(str(sweep_dir), bootstrap=0)
    page = open(path).read()
    assert "<h2>Goodput</h2>" in page and "id='goodput'" in page and line[:12] in page
    runs_csv = (sweep_dir / "runs.csv").read_text().splitlines()[0].split(",")
    assert {"goodput_train_s", "goodput_lost_steps", "goodput_wall_s"} <= set(runs_csv)
    summary = sweep_goodput.sweep_summary(sweep_dir, ["d16-L1-h2"])
    assert 0 < summary["goodput"] < 1 and summary["idle"] > 0
    assert summary["capacity"] == pytest.approx(launch["end"] - launch["start"])
