"""Two processes joined by jax.distributed on 127.0.0.1 train like one process, and the
run gets its full evaluation (completions and their scores) like a one-process run."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.test_train import losses, train_args


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, smoke_cache):
    from tests.conftest import run_cli
    cache = smoke_cache
    common = ["--config.train.steps=10", "--config.train.log_every=1"]
    single = run_cli(*train_args(tmp_path / "single", cache, *common),
                     env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert single.returncode == 0, single.stderr
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tinyscale.cli",
         *train_args(tmp_path / "multi", cache, *common,
                     f"--config.distributed.coordinator=127.0.0.1:{port}",
                     "--config.distributed.num_processes=2",
                     f"--config.distributed.process_id={i}")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    a, b = losses(tmp_path / "single"), losses(tmp_path / "multi")
    assert [s for s, _ in b] == list(range(1, 11))
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) <= 1e-5
    state = json.loads((tmp_path / "multi" / "state.json").read_text())
    assert state["state"] == "done"
    one, two = (json.loads((tmp_path / w / "eval.json").read_text())
                for w in ("single", "multi"))
    assert two["n_completions"] == one["n_completions"] == 8
    for key in ("coherence", "grammar", "consistency", "completion", "consistency_chance",
                "consistency_above_chance"):
        assert key in two, two  # scored, as a one-process run is
    assert abs(two["loss"] - one["loss"]) <= 1e-4
