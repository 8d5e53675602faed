"""Token budgets by branching (tinyscale/train/branches.py): a branch is the wsd run to its
budget, trained alone, bit for bit; it resumes after SIGTERM and SIGKILL like a run; a
sweep of branched runs is analysed as (N, D) points (analysis/budgets.py)."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from analysis import report
from tests.conftest import ROOT, env, run_cli, wait_for  # noqa: F401
from tests.test_train import final_params, losses, train_args

WSD = ("--config.train.schedule=wsd", "--config.train.log_every=1",
       "--config.eval.at_end=false")
BRANCHED = (*WSD, "--config.train.steps=30", "--config.train.branches=(5120, 10240)")
# 512 tokens a step: branches of 10 and 20 steps, forking at steps 8 and 16 (decay 0.2);
# tests/data/tiny_sweep.py:budgets trains these runs at widths 16, 24 and 32


@pytest.fixture(scope="module")
def sweep(env, tmp_path_factory):  # noqa: F811
    path = tmp_path_factory.mktemp("budgets") / "sweep"
    tiny = os.path.join(ROOT, "tests", "data", "tiny_sweep.py") + ":budgets"
    result = run_cli("sweep", "run", tiny, "--sweep-dir", str(path), env=env)
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture(scope="module")
def cache(env):  # noqa: F811
    return env["TINYSCALE_TEST_CACHE"]


@pytest.fixture(scope="module")
def branched(sweep):
    """The d32 run of the sweep: the smoke config with BRANCHED."""
    return sweep / "runs" / "d32-L1-h2"


def read(path):
    return json.loads(path.read_text())


def assert_same(a, b):
    (step_a, params_a), (step_b, params_b) = final_params(a), final_params(b)
    assert step_a == step_b and params_a.keys() == params_b.keys()
    for key in params_a:
        assert np.array_equal(params_a[key], params_b[key]), key
    assert losses(a) == losses(b)
    assert read(a / "eval.json")["loss"] == read(b / "eval.json")["loss"]


def test_a_branch_is_the_wsd_run_to_its_budget_trained_alone(branched, cache, tmp_path):
    alone = tmp_path / "alone"
    result = run_cli(*train_args(alone, cache, *WSD, "--config.train.steps=0",
                                 "--config.train.tokens=10240"))
    assert result.returncode == 0, result.stderr
    branch = branched / "branches" / "10240"
    assert_same(branch, alone)  # every step's loss, the parameters, the evaluation
    assert read(branch / "config.json")["train"]["tokens"] == 10240
    state = read(branch / "state.json")
    assert state["state"] == "done" and state["branched_from"] == {"run": "d32-L1-h2",
                                                                   "step": 16}
    assert read(branched / "branches" / "5120" / "state.json")["branched_from"]["step"] == 8
    assert read(branched / "state.json")["state"] == "done"
    assert losses(branched)[-1][0] == 30


@pytest.mark.slow
def test_sigterm_and_sigkill_in_a_branch_then_resume_is_bit_identical(
        branched, cache, tmp_path):
    """SIGTERM once the 20-step branch is in its cool-down (exit 75, the run pending),
    SIGKILL a step later in the next attempt; the third attempt finishes, and the run and
    both branches end bit-identical to the uninterrupted ones."""
    workdir = tmp_path / "run"
    branch = workdir / "branches" / "10240"
    cmd = [sys.executable, "-m", "tinyscale.cli", *train_args(workdir, cache, *BRANCHED)]

    def start():
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def branch_step():
        try:
            return losses(branch)[-1][0]
        except (OSError, ValueError, IndexError):
            return 0
    proc = start()
    wait_for(lambda: branch_step() >= 17, proc, "the branch's step 17")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert read(workdir / "state.json")["state"] == "pending"
    assert read(branch / "state.json")["state"] == "pending"
    stopped = read(branch / "state.json")["step"]
    assert 17 <= stopped < 20
    proc = start()
    wait_for(lambda: branch_step() > stopped, proc, "a step after the resume")
    proc.kill()
    proc.wait()
    result = run_cli(*train_args(workdir, cache, *BRANCHED))
    assert result.returncode == 0, result.stderr
    assert f"resuming {branch} from step" in result.stderr
    for sub in ("", "branches/5120", "branches/10240"):
        assert_same(workdir / sub, branched / sub)
    assert read(branch / "state.json")["attempts"] == 3


@pytest.mark.parametrize("overrides, says", [
    (("--config.train.branches=(5120,)",), "train.schedule=wsd"),
    ((*WSD, "--config.train.branches=(20480,)"), "smaller than train.tokens"),
    ((*WSD, "--config.train.branches=(5120, 5000)"), "distinct"),
    ((*WSD, "--config.train.branches=(-1,)"), "token budgets"),
    ((*WSD, "--config.train.branches=(1024,)"), "outside the run's stable phase"),
])
def test_bad_branches_are_one_line(cache, tmp_path, overrides, says, refused):
    result = refused(*train_args(tmp_path / "run", cache, "--config.train.steps=30",
                                 *overrides))
    assert result.returncode == 2, result.stderr
    assert "config.train.branches" in result.stderr and says in result.stderr
    assert result.stderr.strip().count("\n") == 0 and not (tmp_path / "run").exists()


def test_a_branched_sweep_fits_l_of_n_and_d_and_counts_what_branching_saved(sweep):
    r = report.compute(str(sweep), bootstrap=100)
    path = report.write(r)
    assert set(r.df["run"]) == {"d16-L1-h2", "d24-L1-h2", "d32-L1-h2"}  # runs: as before
    b = r.budgets
    assert len(b.points) == 9 and b.points.groupby("params")["tokens"].nunique().eq(3).all()
    # a run trains 30 steps, its branches only their cool-downs (2 and 4 steps), where
    # separate runs would train 30 + 10 + 20
    assert b.flops_trained / b.flops_separately == pytest.approx(36 / 60)
    assert all(k in b.fit.intervals for k in ("alpha", "beta", "E"))
    page = open(path).read()
    assert "Token budgets: L(N, D)" in page and "40% saved" in page
    for name in ("isoflop", "frontier"):
        assert (sweep / "figures" / f"{name}.png").exists() and f"id='{name}'" in page
    rows = (sweep / "runs.csv").read_text()
    assert "d16-L1-h2/branches/5120" in rows and "d32-L1-h2/branches/10240" in rows
