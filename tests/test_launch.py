"""Sweep files, the plan, and the local, SLURM and Cloud TPU backends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, all_cores, held, run_cli

TINY = os.path.join(ROOT, "tests", "data", "tiny_sweep.py")


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
def test_malformed_sweep_is_reported_before_launching(tmp_path, source, message, refused):
    path = tmp_path / "bad_sweep.py"
    path.write_text(source)
    result = refused("sweep", "run", str(path), "--sweep-dir", str(tmp_path / "sweep"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "sweep").exists()


def test_paper_plan_marks_the_released_models(command):
    result = command("sweep", "plan", os.path.join(ROOT, "sweeps", "tinystories_paper.py"))
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("d")]
    assert len(rows) == 30
    marked = [line for line in rows if "<- TinyStories" in line]
    assert len(marked) == 7
    assert any("TinyStories-1M shape (3,745,984 params" in line for line in marked)
    assert "30 runs" in result.stdout


@pytest.mark.parametrize("name", ["quickstart.py", "one_vs_deep.py", "cpu_study.py",
                                  "budgets.py", "architectures.py", "data_quality.py",
                                  "distill.py"])
def test_shipped_sweeps_plan(name, command):
    result = command("sweep", "plan", os.path.join(ROOT, "sweeps", name))
    assert result.returncode == 0, result.stderr
    assert " runs" in result.stdout and "active" in result.stdout
    if name == "budgets.py":  # 10 runs, 3 branches each
        assert "10 runs with 30 branches ((N, D) points: 40" in result.stdout


@pytest.mark.slow
def test_local_sweep_survives_two_launcher_kills(env, tmp_path):
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "tinyscale.cli", "sweep", "run", TINY + ":seeds2",
           "--sweep-dir", str(sweep_dir)]  # killed in run 1, then between runs 1 and 2
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
    again = run_cli("sweep", "run", TINY + ":seeds2", "--sweep-dir", str(sweep_dir), env=env)
    assert again.returncode == 0 and "training" not in again.stderr  # nothing left to do
    status = run_cli("sweep", "status", str(sweep_dir))
    assert status.stdout.count(" done ") == 2 and "2 done" in status.stdout


def test_a_run_held_by_another_process_is_waited_for_then_trained(env, tmp_path):
    """A relaunch that finds a run's lock held (a killed launcher's worker still saving
    its checkpoint, say) waits for it instead of ending the sweep unfinished."""
    sweep_dir = tmp_path / "sweep"
    run = sweep_dir / "runs" / "d16-L1-h2"
    with held(run) as release:
        launcher = subprocess.Popen([sys.executable, "-m", "tinyscale.cli", "sweep", "run",
                                     TINY + ":1", "--sweep-dir", str(sweep_dir)], cwd=ROOT,
                                    env={**os.environ, **env}, stderr=subprocess.PIPE,
                                    text=True)
        lines = []
        while not lines or "waiting for d16-L1-h2 (held by" not in lines[-1]:
            line = launcher.stderr.readline()
            assert line, "".join(lines[-20:])
            lines.append(line)
        assert not (run / "state.json").exists()  # nothing trained while it is held
        release(0)
        rest = launcher.stderr.read()
        assert launcher.wait() == 0, rest[-3000:]
    assert "d16-L1-h2: training" in rest and "1/1 done" in rest
    assert states(sweep_dir)["d16-L1-h2"]["state"] == "done"


def test_local_parallel_runs_at_once_on_disjoint_cores(env, tmp_path):
    sweep_dir = tmp_path / "parallel"
    result = run_cli("sweep", "run", TINY + ":2", "--sweep-dir", str(sweep_dir),
                     "--parallel", "2", env=env, preexec_fn=all_cores)
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


def test_plan_warns_when_the_compute_is_far_beyond_the_machine(tmp_path, command):
    path = tmp_path / "huge.py"
    path.write_text("from tinyscale.config import get_config\n"
                    "def sweep():\n    return [{'model.d_model': 2048, 'model.n_layers': 24, "
                    "'model.n_heads': 16, 'train.tokens': 10**11}]\n")
    result = command("sweep", "plan", str(path), "--config.output.peak_flops=1e11")
    assert result.returncode == 0, result.stderr
    assert "years of training" in result.stdout and "warning: that is far beyond" in \
        result.stdout
    small = command("sweep", "plan", os.path.join(ROOT, "sweeps", "quickstart.py"))
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
