"""Provenance (tinyscale/train/provenance.py): a trained run records each session's code,
versions and devices; a resume adds a session; eval and sample write none; the report shows
the sweep's provenance and says when its runs differ. One smoke run, preempted after its
first checkpoint and resumed, trained in this process."""

import importlib.metadata
import json
import os
import pathlib
import shutil
import signal
import subprocess
from unittest import mock

import jax
import pytest

from analysis import provenance as provenance_lib
from analysis import runs
from tests.conftest import ROOT, SMOKE
from tinyscale import cli
from tinyscale.errors import EXIT_PREEMPTED
from tinyscale.train import checkpoint, provenance


def train(workdir, cache) -> int:
    """10 smoke steps, a checkpoint every 5, a final evaluation of 2 short completions."""
    return cli.main(["train", "--config", SMOKE, "--workdir", str(workdir),
                     f"--config.data.cache_dir={cache}", "--config.train.steps=10",
                     "--config.train.checkpoint_every=5", "--config.eval.prompts=2",
                     "--config.eval.max_new_tokens=16", "--config.output.peak_flops=1e11",
                     "--config.output.progress=False"])


@pytest.fixture(scope="module")
def resumed(smoke_cache, tmp_path_factory):
    """A smoke run stopped by SIGTERM right after its first checkpoint (step 5), then
    trained to its end by a second `tinyscale train`: two sessions."""
    workdir = tmp_path_factory.mktemp("provenance") / "run"
    save, sent = checkpoint.Checkpoints.save, []

    def save_then_preempt(self, step, state):
        save(self, step, state)
        if not sent:
            sent.append(step)
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler turns it into a stop
    with mock.patch.object(checkpoint.Checkpoints, "save", save_then_preempt):
        assert train(workdir, smoke_cache) == EXIT_PREEMPTED
    first = json.loads((workdir / "provenance.json").read_text())
    assert train(workdir, smoke_cache) == 0
    return workdir, first, sent[0]


def test_each_session_is_recorded_and_a_resume_adds_one(resumed):
    workdir, first, stopped_at = resumed
    sessions = json.loads((workdir / "provenance.json").read_text())["sessions"]
    assert len(first["sessions"]) == 1 and sessions[0] == first["sessions"][0]  # kept as is
    assert [s["step"] for s in sessions] == [0, stopped_at] and stopped_at == 5
    for s in sessions:
        assert s["versions"]["jax"] == importlib.metadata.version("jax") == jax.__version__
        assert set(s["versions"]) == set(provenance.PACKAGES)
        assert s["devices"] == jax.device_count() and s["processes"] == 1
        assert s["device_kind"] == jax.devices()[0].device_kind and s["hostname"]
    git = sessions[-1]["git"]
    if shutil.which("git") and (pathlib.Path(ROOT) / ".git").exists():
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        assert git["commit"] == head and isinstance(git["dirty"], bool)
    assert json.loads((workdir / "state.json").read_text())["state"] == "done"


def test_eval_and_sample_write_no_provenance(resumed, capsys):
    """(`eval --step` is checked the same way by test_train's earlier-step evaluation.)"""
    workdir = resumed[0]
    before = (workdir / "provenance.json").read_bytes()
    assert cli.main(["sample", str(workdir), "--n", "1", "--max-new-tokens", "4"]) == 0
    assert cli.main(["eval", str(workdir), "--config.eval.prompts=2",
                     "--config.eval.max_new_tokens=8"]) == 0
    assert (workdir / "provenance.json").read_bytes() == before
    assert "completion 0" in capsys.readouterr().out


def test_without_git_the_commit_comes_from_the_git_files(tmp_path):
    provenance.git.cache_clear()
    try:
        with mock.patch.object(provenance.subprocess, "run", side_effect=FileNotFoundError):
            found = provenance.git()
    finally:
        provenance.git.cache_clear()
    if (pathlib.Path(ROOT) / ".git").exists():
        assert len(found["commit"]) == 40 and found["dirty"] is None
    else:
        assert found == {}
    assert provenance._read_head(tmp_path) == {}  # not a checkout: nothing, no error
    (tmp_path / ".git").write_text("gitdir: elsewhere\n")  # a worktree whose dir is gone
    assert provenance._read_head(tmp_path) == {}


def test_the_report_flags_runs_of_other_commits_and_versions(resumed, tmp_path):
    """A sweep of three copies of the run: one resumed on another commit with other
    versions, one with no provenance (trained before it was recorded)."""
    workdir = resumed[0]
    config = json.loads((workdir / "config.json").read_text())
    names = ("a", "b", "c")
    for name in names:
        shutil.copytree(workdir, tmp_path / "runs" / name,
                        ignore=shutil.ignore_patterns("checkpoints", "tb", "lock"))
    (tmp_path / "sweep.json").write_text(json.dumps({"runs": [
        {"index": i, "name": n, "config": config} for i, n in enumerate(names)]}))
    b = tmp_path / "runs" / "b" / "provenance.json"
    record = json.loads(b.read_text())
    record["sessions"][-1]["git"] = {"commit": "f" * 40, "dirty": True, "changed": ["x.py"]}
    record["sessions"][-1]["versions"]["jax"] = "0.0.1"
    b.write_text(json.dumps(record))
    (tmp_path / "runs" / "c" / "provenance.json").unlink()
    df = runs.load(str(tmp_path))
    table = df.drop_duplicates("run").set_index("run")
    assert table.loc["b", "sessions"] == 2 and table.loc["c", "sessions"] == 0
    assert table.loc["b", "git_commit"].split(", ")[-1] == "f" * 40
    assert bool(table.loc["b", "git_dirty"])
    panel = provenance_lib.compute(df)
    assert "1 of the 3 runs record no provenance" in panel.line
    if record["sessions"][0]["git"].get("commit"):  # trained from a checkout
        assert "2 commits" in panel.line and "ffffffffff: 1 run" in panel.line
        assert "1 run resumed on another commit" in panel.line
    assert f"jax differs: {jax.__version__} (2 runs), 0.0.1 (1 run)" in panel.line
    assert "may then come from their code or packages" in panel.line
    assert panel.table["runs"].sum() == 2
    same = provenance_lib.compute(df[df["run"] == "a"])
    assert "differ" not in same.line.lower() and f"jax {jax.__version__}" in same.line
