"""Shared fixtures: a small prepared SynthStories corpus, built once per session."""

import os
import subprocess
import sys

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
