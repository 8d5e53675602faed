"""Shared fixtures: a small prepared SynthStories corpus, built once per session."""

import os
import subprocess
import sys
import time

import pytest

from tinyscale import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(tmp_dir: str):
    """The default config shrunk for tests: a small corpus and vocabulary."""
    c = config_lib.get_config()
    c.data.cache_dir = os.path.join(tmp_dir, "cache")
    c.data.train_stories = 1500
    c.data.eval_stories = 100
    c.data.vocab_size = 512
    return c


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """(config, data dir) of a prepared small SynthStories corpus."""
    from tinyscale.data import pipeline
    c = small_config(str(tmp_path_factory.mktemp("synth")))
    return c, pipeline.prepare(c, progress=False)


def run_cli(*args, env=None, cwd=None, timeout=600):
    """Run `tinyscale ARGS` in a subprocess; the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "tinyscale.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd or ROOT,
                          timeout=timeout)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Environment for launcher subprocesses (tests of sweeps): a shared data cache
    with the smoke corpus prepared (tests/data/tiny_sweep.py reads it)."""
    cache = str(tmp_path_factory.mktemp("cache"))
    env = {"TINYSCALE_TEST_CACHE": cache}
    result = run_cli("data", "prepare", "--config", os.path.join(ROOT, "sweeps",
                     "quickstart.py") + ":smoke", f"--config.data.cache_dir={cache}")
    assert result.returncode == 0, result.stderr
    return env


def wait_for(condition, proc, what, timeout=300, every=0.001):
    """Poll `condition` until it holds; fail if `proc` ends first or `timeout` passes."""
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(every)
