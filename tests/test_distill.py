"""Distillation (tinyscale/train/distill.py): a finished run's logits teach a new run."""

import json

import numpy as np
import pytest

from tests.conftest import run_cli, wait_for
from tests.test_train import (
    assert_same_run,
    cache,  # noqa: F401 - the module fixture
    final_params,
    logged_step,
    losses,
    start,
    train_args,
)


@pytest.fixture(scope="module")
def teacher(cache, tmp_path_factory):  # noqa: F811
    """A finished run (the smoke model, 60 steps) to learn from."""
    workdir = tmp_path_factory.mktemp("teacher") / "run"
    result = run_cli(*train_args(workdir, cache, "--config.train.steps=60",
                                 "--config.model.d_model=48", "--config.model.n_heads=2",
                                 "--config.eval.at_end=False"))
    assert result.returncode == 0, result.stderr
    return workdir


# The student's runs at XLA's default compile: weight 0 equals plain training bit for bit
# there; at the smoke config's quick compile the step with the teacher's pass rounds
# otherwise (docs/training.md, "Quick compiles").
DEFAULT_COMPILE = "--config.train.quick_compile=False"


@pytest.fixture(scope="module")
def plain(cache, tmp_path_factory):  # noqa: F811
    workdir = tmp_path_factory.mktemp("plain") / "run"
    result = run_cli(*train_args(workdir, cache, "--config.train.steps=40",
                                 "--config.eval.at_end=False", DEFAULT_COMPILE))
    assert result.returncode == 0, result.stderr
    return workdir


def distilled(workdir, cache, teacher, weight, *extra):  # noqa: F811
    return train_args(workdir, cache, "--config.train.steps=40", "--config.eval.at_end=False",
                      DEFAULT_COMPILE, f"--config.train.teacher={teacher}",
                      f"--config.train.distill_weight={weight}", *extra)


def metrics(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_weight_zero_is_plain_training_bit_for_bit(cache, teacher, plain, tmp_path):  # noqa: F811
    """The teacher runs in the step (its KL is logged) but weighs nothing: every parameter
    and loss equals the run trained without it."""
    workdir = tmp_path / "run"
    result = run_cli(*distilled(workdir, cache, teacher, 0.0))
    assert result.returncode == 0, result.stderr
    assert_same_run(workdir, plain)
    kls = [m["distill_kl"] for m in metrics(workdir)]
    assert all(k > 0 for k in kls)


def test_distillation_pulls_the_student_to_the_teacher(cache, teacher, plain, tmp_path):  # noqa: F811
    workdir = tmp_path / "run"
    result = run_cli(*distilled(workdir, cache, teacher, 1.0,
                                "--config.train.distill_temperature=1.0"))
    assert result.returncode == 0, result.stderr
    kl = [m["distill_kl"] for m in metrics(workdir)]
    assert kl[-1] < 0.5 * kl[0], kl
    # the plain run's parameters are not the distilled run's
    _, a = final_params(workdir)
    _, b = final_params(plain)
    assert any(not np.array_equal(a[k], b[k]) for k in a)
    # its MFU counts the teacher's forward pass too
    plain_flops = metrics(plain)[-1]["mfu"] / metrics(plain)[-1]["tokens_per_s"]
    mine = metrics(workdir)[-1]["mfu"] / metrics(workdir)[-1]["tokens_per_s"]
    assert mine > 1.3 * plain_flops


@pytest.mark.slow
def test_a_killed_distillation_resumes_bit_identical(cache, teacher, tmp_path):  # noqa: F811
    reference = tmp_path / "reference"
    result = run_cli(*distilled(reference, cache, teacher, 0.5))
    assert result.returncode == 0, result.stderr
    workdir = tmp_path / "run"
    extra = (f"--config.train.teacher={teacher}", "--config.train.distill_weight=0.5",
             "--config.eval.at_end=False", "--config.train.checkpoint_every=10", DEFAULT_COMPILE)
    proc = start(workdir, cache, *extra)
    wait_for(lambda: logged_step(workdir) >= 15, proc, "step 15")
    proc.kill()
    proc.wait()
    result = run_cli(*distilled(workdir, cache, teacher, 0.5,
                                "--config.train.checkpoint_every=10"))
    assert result.returncode == 0, result.stderr
    assert json.loads((workdir / "state.json").read_text())["attempts"] == 2
    step, params = final_params(workdir)
    _, ref = final_params(reference)
    assert step == 40 and all(np.array_equal(params[k], ref[k]) for k in ref)
    assert losses(workdir) == losses(reference)


def test_a_teacher_that_is_not_a_finished_run_or_speaks_another_vocabulary(
        cache, teacher, tmp_path):  # noqa: F811
    for bad, says in ((tmp_path / "nothing", "not a finished run"),
                      (teacher / "checkpoints", "not a finished run")):
        result = run_cli(*distilled(tmp_path / "student", cache, bad, 0.5))
        err = result.stderr.strip()
        assert result.returncode == 2 and "Traceback" not in err and err.count("\n") == 0, err
        assert "config.train.teacher" in err and says in err, err
        assert not (tmp_path / "student").exists()  # refused before anything was written
    result = run_cli(*distilled(tmp_path / "student", cache, teacher, 0.5,
                                "--config.data.vocab_size=256"))
    assert result.returncode == 2 and "another tokenizer" in result.stderr, result.stderr
    assert not (tmp_path / "student" / "checkpoints").exists()
