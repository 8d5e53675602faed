"""Packing (tinyscale/train/packed.py, launch.pack): K runs of one shape as one program.

A packed run's losses equal its solo run's to float32 rounding (the batched matmuls sum
in another order: measured 4.8e-7 at most over 30 steps; the test allows 1e-5), its run
directory has the solo layout plus `packed_with`, a diverging run fails alone, and a
group killed with SIGKILL resumes to the same losses and parameters as the same group
uninterrupted, bit for bit (a group of another size rounds differently: the comparison
is between groups of the same runs)."""

import copy
import gc
import json
import os
import re
import signal
import subprocess
import sys
import weakref

import jax
import numpy as np
import pytest

from tests.conftest import ROOT, env, run_cli, wait_for  # noqa: F401
from tests.test_train import final_params
from tinyscale import config as config_lib
from tinyscale import parallel
from tinyscale.model.spec import ModelSpec
from tinyscale.train import steps
from tinyscale.train.packed import make_steps

TINY = os.path.join(ROOT, "tests", "data", "tiny_sweep.py") + ":pack"
PACK = ("--config.launch.pack=auto",)
SOLO = {"s0": "--config.seed=0", "s1": "--config.seed=1", "s0-lr0.01": "--config.train.lr=1e-2"}


def metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def packed(env, tmp_path_factory):  # noqa: F811
    path = tmp_path_factory.mktemp("packed") / "sweep"
    result = run_cli("sweep", "run", TINY, "--sweep-dir", str(path), *PACK, env=env)
    assert result.returncode == 1, result.stderr  # the diverging run failed
    assert "packed as one program with 3 more" in result.stderr
    return path


def layout(run) -> set[str]:
    names = set()
    for folder, dirs, files in os.walk(run):
        rel = os.path.relpath(folder, run)
        if rel.startswith(("tb", "checkpoints" + os.sep)):
            continue
        names |= {os.path.normpath(os.path.join(rel, x)) for x in dirs + files}
    return names


def test_packed_runs_match_solo_runs_and_a_diverging_run_fails_alone(packed, env, tmp_path):  # noqa: F811
    state = json.loads((packed / "runs" / "s2-lr1e+30" / "state.json").read_text())
    assert state["state"] == "failed" and "non-finite loss" in state["last_error"]
    for name, override in SOLO.items():
        solo = tmp_path / name
        full = name == "s0"  # the others skip the story completions (time)
        result = run_cli("train", "--config", TINY, "--workdir", str(solo), override,
                         f"--config.eval.at_end={full}", env=env)
        assert result.returncode == 0, result.stderr
        run = packed / "runs" / name
        state = json.loads((run / "state.json").read_text())
        assert state["state"] == "done" and len(state["packed_with"]) == 3
        a, b = metrics(run), metrics(solo)
        assert [m["step"] for m in a] == [m["step"] for m in b]
        assert [set(m) for m in a] == [set(m) for m in b]
        for x, y in zip(a, b, strict=True):
            assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-5)
            assert x.get("eval_loss", 0) == pytest.approx(y.get("eval_loss", 0), abs=1e-5)
        (_, pa), (_, pb) = final_params(run), final_params(solo)
        for key in pa:
            np.testing.assert_allclose(pa[key], pb[key], atol=1e-4, err_msg=key)
        assert "coherence" in json.loads((run / "eval.json").read_text())
        if full:
            assert layout(run) == layout(solo)  # the same files, packed or not
            assert json.loads((run / "eval.json").read_text()).keys() == \
                json.loads((solo / "eval.json").read_text()).keys()


@pytest.mark.slow
def test_a_packed_group_killed_with_sigkill_resumes_bit_identical(env, tmp_path):  # noqa: F811
    tiny = TINY + "3"
    reference = tmp_path / "reference"
    result = run_cli("sweep", "run", tiny, "--sweep-dir", str(reference), *PACK, env=env)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "tinyscale.cli", "sweep", "run", tiny, "--sweep-dir",
           str(path), *PACK]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def logged():
        try:
            return metrics(path / "runs" / "s1")[-1]["step"]
        except (OSError, ValueError, IndexError):
            return 0
    def saved(step):  # orbax renames a checkpoint to its step once it is complete
        return all((path / "runs" / name / "checkpoints" / str(step)).is_dir()
                   for name in SOLO)
    # past step 15 and once every run's checkpoint at 10 is complete: the async save can
    # still be running at step 15 on a loaded machine (the resume then started from 0)
    wait_for(lambda: logged() >= 15 and saved(10), proc, "step 15 and checkpoint 10")
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its worker, with no warning
    proc.wait()
    result = run_cli("sweep", "run", tiny, "--sweep-dir", str(path), *PACK, env=env)
    assert result.returncode == 0, result.stderr
    # the checkpoint at 10 at least was saved before the kill (20 too, on a fast machine)
    assert re.search(f"resuming {re.escape(str(path / 'runs' / 's0'))} from step (10|20)\n",
                     result.stderr), result.stderr
    for name in SOLO:
        a, b = path / "runs" / name, reference / "runs" / name
        assert [(m["step"], m["train_loss"]) for m in metrics(a)] == \
            [(m["step"], m["train_loss"]) for m in metrics(b)]
        (_, pa), (_, pb) = final_params(a), final_params(b)
        assert all(np.array_equal(pa[k], pb[k]) for k in pa), name
        assert json.loads((a / "state.json").read_text())["attempts"] == 2


def test_runs_of_one_shape_share_their_programs_in_a_process():
    """Steps are built once per shape and program (steps.memo): another seed or learning
    rate (an argument of the program) gets the same jitted function; a knob the program
    reads (clipping, accumulation, the schedule's kind, quick compiles), another shape,
    get their own; the memo keeps no run's arrays."""
    c = config_lib.get_config()
    c.model.update(d_model=16, n_layers=1, n_heads=2)
    mesh = parallel.make_mesh(c)
    spec = ModelSpec.from_config(c.model, 64)
    a, b = steps.Params(spec, mesh, 0, materialize=False), steps.Params(spec, mesh, 1)
    assert a.model == b.model and a.structure is b.structure
    train = steps.make_train_step(b, c.train, 30)
    assert steps.make_train_step(a, c.train, 30) is train
    assert steps.make_eval_step(a, False) is steps.make_eval_step(b, False)
    quick = steps.make_eval_step(a, True)
    assert quick is not steps.make_eval_step(a, False)
    # and its options reach XLA: the older emitters fuse otherwise (the optimised HLO)
    batch = jax.ShapeDtypeStruct((2, 17), np.int32)
    compiled = [f.lower(a.initial, batch).compile().as_text()
                for f in (quick, steps.make_eval_step(a, False))]
    assert compiled[0] != compiled[1]
    assert make_steps(a, c.train, 30) is make_steps(b, c.train, 30)
    faster = copy.deepcopy(c.train)
    faster.update(lr=0.1, b2=0.9, weight_decay=0.0)
    assert steps.make_train_step(a, faster, 30) is train
    for knob, value in (("grad_clip", 0.5), ("grad_accum", 2), ("schedule", "constant"),
                        ("quick_compile", True)):
        other = copy.deepcopy(c.train)
        other[knob] = value
        assert steps.make_train_step(a, other, 30) is not train, knob
    c.model.d_model = 32
    wide = steps.Params(ModelSpec.from_config(c.model, 64), mesh, 0, materialize=False)
    assert steps.make_train_step(wide, c.train, 30) is not train
    arrays = weakref.ref(b.initial["embed/embedding"])
    del b
    gc.collect()
    assert arrays() is None  # the programs hold the shape, not the values
