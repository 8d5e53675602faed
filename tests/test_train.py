"""End-to-end training through the real `tinyscale train` command.

Over 300 lines: one file, so that its module fixtures (the smoke data cache, the
40-step reference run that resumes, signals, full disks and compiles are compared
against) are built once for all of them."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import ROOT, SMOKE, run_cli, wait_for


@pytest.fixture(scope="module")
def cache(smoke_cache):
    """A cache dir with the smoke corpus already prepared (shared by the runs below)."""
    return smoke_cache


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
    for name in ("config.json", "state.json", "metrics.jsonl", "eval.json", "checkpoints", "tb",
                 "provenance.json"):
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


def test_the_quick_compile_trains_the_same_run_to_float32_rounding(reference, cache, tmp_path):
    """The smoke config compiles its run's programs quickly (train.quick_compile): the
    same run at XLA's default compile agrees at every step to float32 rounding."""
    default = tmp_path / "run"
    result = run_cli(*train_args(default, cache, "--config.train.steps=40",
                                 "--config.train.quick_compile=False",
                                 "--config.eval.at_end=False"))
    assert result.returncode == 0, result.stderr
    a, b = losses(reference), losses(default)
    assert [s for s, _ in a] == [s for s, _ in b] and len(a) == 8
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) <= 1e-5
    (_, pa), (_, pb) = final_params(reference), final_params(default)
    for key in pa:
        np.testing.assert_allclose(pa[key], pb[key], atol=1e-5, err_msg=key)


def test_second_invocation_reports_done(reference, cache):
    result = run_cli(*train_args(reference, cache, "--config.train.steps=40"))
    assert result.returncode == 0 and "already done" in result.stderr


def start(workdir, cache, *extra, ulimit_f=None):
    """`tinyscale train` (40 steps) in the background, optionally under `ulimit -f`."""
    cmd = [sys.executable, "-m", "tinyscale.cli",
           *train_args(workdir, cache, "--config.train.steps=40", *extra)]
    if ulimit_f:
        cmd = ["bash", "-c", f"ulimit -f {ulimit_f} && exec {shlex.join(cmd)}"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def logged_step(workdir) -> int:
    try:
        return losses(workdir)[-1][0]
    except (OSError, ValueError, IndexError):
        return 0


def saving(workdir) -> bool:
    try:
        return any("orbax-checkpoint-tmp" in n for n in os.listdir(workdir / "checkpoints"))
    except OSError:
        return False


@pytest.mark.slow
def test_kill_9_in_training_and_during_a_save_then_resume_is_bit_identical(
        reference, cache, tmp_path):
    """First the run directory a kill leaves while a run starts: checkpoints/ made (the
    checkpoint manager comes first), no config.json yet; it trains. SIGKILL once the
    loop has logged a step, then once a checkpoint save has begun (its temporary folder
    exists); the next attempt resumes and ends bit-identical."""
    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    proc = start(workdir, cache)
    wait_for(lambda: logged_step(workdir) >= 5, proc, "step 5")
    proc.kill()
    proc.wait()
    killed_mid_save = False
    for _ in range(3):  # a save can finish between seeing it and the kill: try the next
        proc = start(workdir, cache)
        wait_for(lambda: saving(workdir), proc, "a checkpoint save", every=0.001)
        proc.kill()
        proc.wait()
        if saving(workdir):
            killed_mid_save = True
            break
    assert killed_mid_save
    result = run_cli(*train_args(workdir, cache, "--config.train.steps=40"))
    assert result.returncode == 0, result.stderr
    assert json.loads((workdir / "state.json").read_text())["attempts"] >= 3
    assert not saving(workdir)  # the half-written checkpoint was cleaned up
    assert_same_run(workdir, reference)


@pytest.mark.slow
def test_double_sigterm_saves_then_a_damaged_checkpoint_falls_back(reference, cache,
                                                                     tmp_path):
    """Two SIGTERMs at once: exit 75 with a complete checkpoint. Then the newest checkpoint
    is damaged (its array data deleted): the rerun sets it aside, resumes from the one
    before, and still ends bit-identical to an uninterrupted run."""
    workdir = tmp_path / "run"
    proc = start(workdir, cache)
    wait_for(lambda: logged_step(workdir) >= 25, proc, "step 25")
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    state = json.loads((workdir / "state.json").read_text())
    assert state["state"] == "pending" and "SIGTERM" in state["last_error"]
    stopped_at = state["step"]
    assert 25 <= stopped_at < 40 and not saving(workdir)
    assert f"checkpoint saved at step {stopped_at}" in err
    assert not (workdir / "lock").exists()
    steps_saved = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
    assert steps_saved[-1] == stopped_at
    shutil.rmtree(workdir / "checkpoints" / str(stopped_at) / "default" / "d")
    result = run_cli(*train_args(workdir, cache, "--config.train.steps=40"))
    assert result.returncode == 0, result.stderr
    assert f"checkpoint {stopped_at} does not restore" in result.stderr
    assert f"resuming {workdir} from step {steps_saved[-2]}" in result.stderr
    sessions = json.loads((workdir / "provenance.json").read_text())["sessions"]
    assert [s["step"] for s in sessions] == [0, steps_saved[-2]]  # the resume: a session
    assert (workdir / "checkpoints" / f"damaged-{stopped_at}").is_dir()  # kept, not lost
    assert_same_run(workdir, reference)


@pytest.mark.slow
def test_a_second_trainer_of_a_running_run_is_refused(reference, cache, tmp_path):
    workdir = tmp_path / "run"
    first = start(workdir, cache)
    wait_for(lambda: json_or(workdir / "state.json", {}).get("state") == "running", first,
             "the first trainer registering")
    first.send_signal(signal.SIGSTOP)  # held mid-run, however slow the second one starts
    try:
        second = run_cli(*train_args(workdir, cache, "--config.train.steps=40"))
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2 and "is being trained by pid" in second.stderr
    assert second.stderr.strip().count("\n") == 0
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert_same_run(workdir, reference)  # one writer: every step logged once


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_run_resumes(reference, cache, tmp_path):
    """A file-size limit (`ulimit -f`, 100 KiB) makes the first checkpoint write fail."""
    workdir = tmp_path / "run"
    proc = start(workdir, cache, "--config.output.progress=False", ulimit_f=100)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert err.strip().count("\n") == 0 and "the disk is full" in err, err
    state = json.loads((workdir / "state.json").read_text())
    assert state["state"] == "failed" and "EFBIG" in state["last_error"]
    result = run_cli(*train_args(workdir, cache, "--config.train.steps=40"))
    assert result.returncode == 0, result.stderr
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
    ("--config.model.experts_per_token=3 --config.model.n_experts=2",
     "model.experts_per_token"),
    ("--config.model.attention_pattern=local --config.model.window_size=0",
     "model.window_size"),
    ("--config.model.attention_pattern=local --config.model.window_size=65",
     "model.window_size"),
    ("--config.model.rotary_fraction=1.5", "model.rotary_fraction"),
    ("--config.train.batch_size=0", "train.batch_size"),
    ("--config.mesh.tensor=3", "mesh"),
    ("--config.model.d_model=48", "model.d_model"),  # a different run in the same workdir
])
def test_bad_config_never_touches_the_run(reference, cache, override, knob, refused):
    before = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in
              os.walk(reference) for p in fs}
    result = refused(*train_args(reference, cache, "--config.train.steps=40",
                                 *override.split()))
    assert result.returncode == 2
    assert knob in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    after = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in
             os.walk(reference) for p in fs}
    assert before == after


@pytest.mark.parametrize("model", [(), ("--config.model.n_experts=4",)])
def test_eight_device_mesh_matches_one_device(cache, tmp_path, model):
    """Data, fsdp and tensor axes of 2 (a mixture's experts sharded over fsdp)."""
    # the losses are compared, so no run evaluates at its end (sampling on 8 devices is
    # most of such a run's time)
    common = ("--config.train.steps=10", "--config.train.log_every=1",
              "--config.eval.at_end=False")
    one = run_cli(*train_args(tmp_path / "one", cache, *common, *model))
    eight = run_cli(*train_args(tmp_path / "eight", cache, *common, "--config.mesh.data=2",
                                "--config.mesh.fsdp=2", "--config.mesh.tensor=2", *model),
                    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert one.returncode == 0 and eight.returncode == 0, eight.stderr
    a, b = losses(tmp_path / "one"), losses(tmp_path / "eight")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 11))
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) <= 1e-5
    if model:  # the router's load per expert is logged
        last = json.loads((tmp_path / "eight" / "metrics.jsonl").read_text().splitlines()[-1])
        assert len(last["expert_load"]) == 1 and len(last["expert_load"][0]) == 4
        assert 0 <= last["expert_load_min"] <= 0.25 <= last["expert_load_max"] <= 1


def test_experts_the_mesh_cannot_shard_are_one_line(cache, tmp_path):
    result = run_cli(*train_args(tmp_path / "run", cache, "--config.model.n_experts=3",
                                 "--config.mesh.fsdp=2"),
                     env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert result.returncode == 2 and "config.model.n_experts=3" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and not (tmp_path / "run").exists()


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


def test_eval_of_an_earlier_step_keeps_the_final_result(reference, tmp_path):
    """`eval --step N` writes eval-step<N>.json (with settings other than the run's own,
    eval-step<N>-<hash>.json, the settings recorded); eval.json (the run's result) is
    untouched. A failed run says so, and an unreachable judge says so on the console."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    final = (run / "eval.json").read_text()
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "state": "failed",
                                                "last_error": "test"}))
    result = run_cli("eval", str(run), "--step", "20", "--config.eval.prompts=4",
                     "--config.eval.judge_url=http://127.0.0.1:9/v1",
                     "--config.eval.judge_retries=0")
    assert result.returncode == 0, result.stderr
    assert "is a failed run" in result.stderr
    assert "judge: 4 of 4 completions got no grade (last error: unreachable" in result.stderr
    assert (run / "eval.json").read_text() == final
    assert (run / "provenance.json").read_text() == (reference / "provenance.json").read_text()
    written, = run.glob("eval-step20-*.json")  # other settings: a file of their own
    earlier = json.loads(written.read_text())
    assert earlier["step"] == 20 and earlier["judge_failed"] == 4
    assert earlier["overrides"]["eval.prompts"] == 4
    samples, = run.glob("samples-step20-*.jsonl")
    assert len(samples.read_text().splitlines()) == 4


def test_weights_and_biases_offline(cache, tmp_path):
    """output.wandb logs every metrics line to a W&B run named after the run directory
    (wandb's offline mode: no network); the run's id is stable, so a resume continues it."""
    pytest.importorskip("wandb")
    workdir = tmp_path / "runs" / "d32-wb"
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = run_cli(*train_args(workdir, cache, "--config.train.steps=10",
                                 "--config.output.wandb=True", "--config.eval.at_end=False"),
                     env=env)
    assert result.returncode == 0, result.stderr
    offline = [d for d in os.listdir(workdir / "wandb") if d.startswith("offline-run-")]
    assert len(offline) == 1
    run_id = offline[0].rsplit("-", 1)[-1]
    log = (workdir / "wandb" / offline[0] / f"run-{run_id}.wandb").read_bytes()
    for key in (b"train_loss", b"eval_loss", b"tokens_per_s"):
        assert key in log, key
    assert log.count(b"train_loss") >= 2  # one history record per metrics line (5, 10)
    import hashlib
    assert run_id == hashlib.sha256(str(workdir).encode()).hexdigest()[:16]  # stable id
    off = run_cli(*train_args(tmp_path / "plain", cache, "--config.train.steps=5",
                              "--config.eval.at_end=False"), env=env)
    assert off.returncode == 0 and not (tmp_path / "plain" / "wandb").exists()  # default off
