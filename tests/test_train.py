"""End-to-end training through the real `tinyscale train` command."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import ROOT, run_cli

SMOKE = os.path.join(ROOT, "sweeps", "quickstart.py") + ":smoke"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache dir with the smoke corpus already prepared (shared by the runs below)."""
    path = str(tmp_path_factory.mktemp("cache"))
    result = run_cli("data", "prepare", "--config", SMOKE, f"--config.data.cache_dir={path}")
    assert result.returncode == 0, result.stderr
    return path


def train_args(workdir, cache, *extra):
    return ["train", "--config", SMOKE, "--workdir", str(workdir),
            f"--config.data.cache_dir={cache}", "--config.output.peak_flops=1e11", *extra]


def final_params(workdir):
    ckpt = os.path.join(workdir, "checkpoints")
    step = max(int(s) for s in os.listdir(ckpt) if s.isdigit())
    tree = ocp.StandardCheckpointer().restore(os.path.join(ckpt, str(step), "default"))
    return step, {k: np.asarray(v) for k, v in tree["params"].items()}


def json_or(path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [(m["step"], m["train_loss"]) for m in map(json.loads, f)]


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference") / "run"
    result = run_cli(*train_args(workdir, cache, "--config.train.steps=40"))
    assert result.returncode == 0, result.stderr
    return workdir


def assert_same_run(workdir, reference):
    step, params = final_params(workdir)
    ref_step, ref_params = final_params(reference)
    assert step == ref_step == 40
    assert params.keys() == ref_params.keys()
    for key in params:
        assert np.array_equal(params[key], ref_params[key]), key
    assert losses(workdir) == losses(reference)  # continuous, no duplicated steps


def test_run_directory_contract(reference):
    for name in ("config.json", "state.json", "metrics.jsonl", "eval.json", "checkpoints", "tb"):
        assert (reference / name).exists(), name
    state = json.loads((reference / "state.json").read_text())
    assert state["state"] == "done" and state["step"] == 40
    first = json.loads((reference / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("step", "tokens", "train_loss", "lr", "grad_norm", "tokens_per_s", "mfu",
                "wall_s"):
        assert key in first
    steps = [s for s, _ in losses(reference)]
    assert steps == sorted(set(steps))
    assert losses(reference)[-1][1] < losses(reference)[0][1]  # it learns
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(reference / "tb"))
    events.Reload()
    assert len(events.Scalars("train_loss")) == len(steps)


def test_second_invocation_reports_done(reference, cache):
    result = run_cli(*train_args(reference, cache, "--config.train.steps=40"))
    assert result.returncode == 0 and "already done" in result.stderr


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_is_bit_identical(reference, cache, tmp_path):
    workdir = tmp_path / "run"
    rng = random.Random(0)
    env = {**os.environ}
    for attempt in range(1, 4):
        proc = subprocess.Popen([sys.executable, "-m", "tinyscale.cli",
                                 *train_args(workdir, cache, "--config.train.steps=40")],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # Wait for this attempt to register (start-up time varies from machine to machine),
        # then kill at a random moment of its compile or its training loop.
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and \
                json_or(workdir / "state.json", {}).get("attempts", 0) < attempt:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if json_or(workdir / "state.json", {}).get("state") == "done":
            break
    result = run_cli(*train_args(workdir, cache, "--config.train.steps=40"))
    assert result.returncode == 0, result.stderr
    assert json.loads((workdir / "state.json").read_text())["attempts"] >= 2
    assert_same_run(workdir, reference)


@pytest.mark.slow
def test_sigterm_saves_and_resumes_identically(reference, cache, tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tinyscale.cli",
                             *train_args(workdir, cache, "--config.train.steps=40")],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (
            (workdir / "metrics.jsonl").exists() and losses(workdir)[-1:][0][0] >= 5
            if (workdir / "metrics.jsonl").exists() and losses(workdir) else False):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    state = json.loads((workdir / "state.json").read_text())
    assert state["state"] == "pending" and "SIGTERM" in state["last_error"]
    stopped_at = state["step"]
    assert 5 <= stopped_at < 40
    assert str(stopped_at) in os.listdir(workdir / "checkpoints")
    result = run_cli(*train_args(workdir, cache, "--config.train.steps=40"))
    assert result.returncode == 0, result.stderr
    assert f"resuming {workdir} from step {stopped_at}" in result.stderr
    assert_same_run(workdir, reference)


def test_nan_loss_fails_the_run(cache, tmp_path):
    result = run_cli(*train_args(tmp_path / "run", cache, "--config.train.lr=1e30",
                                 "--config.train.grad_clip=0.0",
                                 "--config.train.warmup_steps=0"))
    assert result.returncode == 1
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["state"] == "failed" and "non-finite loss" in state["last_error"]
    assert state["step"] >= 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("override, knob", [
    ("--config.model.n_heads=3", "model.n_heads"),
    ("--config.train.batch_size=0", "train.batch_size"),
    ("--config.mesh.tensor=3", "mesh"),
    ("--config.model.d_model=48", "model.d_model"),  # a different run in the same workdir
])
def test_bad_config_never_touches_the_run(reference, cache, override, knob):
    before = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in
              os.walk(reference) for p in fs}
    result = run_cli(*train_args(reference, cache, "--config.train.steps=40", override))
    assert result.returncode == 2
    assert knob in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    after = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in
             os.walk(reference) for p in fs}
    assert before == after


def test_eight_device_mesh_matches_one_device(cache, tmp_path):
    one = run_cli(*train_args(tmp_path / "one", cache, "--config.train.steps=10",
                              "--config.train.log_every=1"))
    eight = run_cli(*train_args(tmp_path / "eight", cache, "--config.train.steps=10",
                                "--config.train.log_every=1", "--config.mesh.data=2",
                                "--config.mesh.fsdp=2", "--config.mesh.tensor=2"),
                    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert one.returncode == 0 and eight.returncode == 0, eight.stderr
    a, b = losses(tmp_path / "one"), losses(tmp_path / "eight")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 11))
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) <= 1e-5


def test_relative_workdir_trains_and_evaluates(cache, tmp_path):
    """A relative --workdir (what a user types) works for training, the end-of-run
    evaluation (orbax restores only absolute paths) and `tinyscale eval`."""
    args = ["train", "--config", SMOKE, "--workdir", "rel/run", f"--config.data.cache_dir={cache}",
            "--config.output.peak_flops=1e11", "--config.train.steps=10"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0 and "evaluation failed" not in result.stderr, result.stderr
    assert json.loads((tmp_path / "rel" / "run" / "eval.json").read_text())["step"] == 10
    again = run_cli("eval", "rel/run", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
