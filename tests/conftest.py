"""Shared fixtures of the whole suite: prepared corpora built once per session, the kept
compilation cache, the command run in-process, fake TPU slots, and events to wait on."""

import contextlib
import gc
import io
import os
import subprocess
import sys
import tempfile
import time
from unittest import mock

import jax
import pytest
from flax import nnx

from tests import fake_gcloud, kept_cache
from tinyscale import cli, parallel, process
from tinyscale import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# XLA's flags and freed memory as the command has them, before any test computes (the
# processes tests start inherit XLA_FLAGS; the command sets the same itself)
process.for_compute()


def pytest_configure(config):
    """The kept compilation cache bounded, once per session (by the controller, before
    xdist starts its workers). Under xdist, each worker (and every process it starts)
    runs on its own share of the cores, before JAX sizes its thread pool: two workers'
    XLA thread pools on the same cores would spin against each other. Tests that need
    every core (launching K runs on disjoint cores; the SLURM daemons) start their
    processes with `all_cores`."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get(
        "PYTEST_XDIST_WORKER_COUNT")
    if not worker:
        kept_cache.bound()
    if not hasattr(os, "sched_setaffinity"):  # macOS: no CPU affinity
        return
    cores = sorted(os.sched_getaffinity(0))
    if worker and count and 1 < int(count) <= len(cores):
        os.sched_setaffinity(0, cores[int(worker.removeprefix("gw"))::int(count)])


# The files that take longest in the suite, longest first (their wall time in the README's
# test command at 20a8d1b, docs/results.md): xdist hands out whole files in collection
# order, so these start first and the short files fill both workers' ends (a long file
# handed out last keeps the other worker idle: at 20a8d1b with 8 files listed,
# test_tpu_faults.py came last and one worker ended 47 s after the other). Scheduling
# only: a stale list costs time, not correctness.
LONGEST_FIRST = (
    "test_tpu.py", "test_backends.py", "test_mup.py", "test_gcs.py", "test_evals.py",
    "test_train.py", "test_english.py", "test_tpu_faults.py", "test_sample.py",
    "test_model.py", "test_pack.py", "test_export.py", "test_launch.py", "test_branches.py",
    "test_quality.py", "test_creativity.py", "test_cross_entropy.py", "test_analysis.py",
    "test_multiprocess.py", "test_distill.py", "test_tokenizers.py", "test_attention.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable


def pytest_collection_finish(session):
    """Every test module imported: what is garbage now is collected, and the rest (the
    modules, pytest's items) frozen out of the collector's walks, as the command does at
    its start (process.freeze_imports; the commands tests run in this process then leave
    it as it is)."""
    gc.collect()
    process.freeze_imports()


# compiler_options for a test's own programs that run a few times on small inputs, as
# tinyscale compiles its one-off inits on CPU: LLVM unoptimised and XLA's older kernel
# emitters, a fraction of the compile; every comparison, the exact ones too, passes as it
# did (docs/results.md, "Imports frozen; tests' one-off programs at -O0", and "Programs
# once per process; one-off programs on the older emitters").
RUN_FEW_TIMES = parallel.QUICK_COMPILE


def one_program(model):
    """(forward(state, tokens) -> the model's logits as one program compiled with
    RUN_FEW_TIMES, not op by op; the model's state)."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda st, tokens: nnx.merge(graphdef, st)(tokens),
                   compiler_options=RUN_FEW_TIMES), state


def all_cores():
    """preexec_fn: the started process may use every core of the machine."""
    os.sched_setaffinity(0, range(os.cpu_count()))


def small_config(tmp_dir: str):
    """The default config shrunk for tests: a small corpus and vocabulary."""
    c = config_lib.get_config()
    c.data.cache_dir = os.path.join(tmp_dir, "cache")
    c.data.train_stories = 1500
    c.data.eval_stories = 100
    c.data.vocab_size = 512
    return c


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One JAX compilation cache for every process of the test sessions (both xdist
    workers, every sweep's workers too: the launchers use the folder the environment
    names), kept between sessions (tests/kept_cache.py): a program compiled once is
    loaded after, as a user's later sweeps load theirs. With kept_cache's variable set
    empty, fresh for each session."""
    kept = kept_cache.folder()
    if not kept:
        base = tmp_path_factory.getbasetemp()
        kept = str((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base)
                   / "jax-cache")
    os.environ[config_lib.COMPILATION_CACHE_ENV] = kept


@pytest.fixture(scope="session")
def reference_lm_cache():
    """`seed(CACHE_DIR)`: CACHE_DIR's reference_lm/ becomes a link to the folder where
    `ReferenceLM()` keeps the GGUF's dequantised weights, metadata and tokenizer by
    default (under config.CACHE_ROOT, as the tests that load it without a cache dir do):
    parsed and dequantised once per machine, not once per test that uses a cache of its
    own (tests/test_evals.py checks the dequantising itself, in a folder of its own)."""
    shared = os.path.join(os.path.expanduser(config_lib.CACHE_ROOT), "reference_lm")
    os.makedirs(shared, exist_ok=True)

    def seed(cache_dir):
        os.makedirs(cache_dir, exist_ok=True)
        os.symlink(shared, os.path.join(cache_dir, "reference_lm"))
        return str(cache_dir)
    return seed


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """(config, data dir) of a prepared small SynthStories corpus."""
    from tinyscale.data import pipeline
    c = small_config(str(tmp_path_factory.mktemp("synth")))
    return c, pipeline.prepare(c, progress=False)


# What a process reads once, when it starts its backend or its interpreter: a command
# given other values for them runs in a process of its own.
_READ_AT_START = ("XLA_FLAGS", "JAX_PLATFORMS", "JAX_NUM_CPU_DEVICES", "PYTHONPATH")


def run_cli(*args, env=None, cwd=None, timeout=600, preexec_fn=None):
    """Run `tinyscale ARGS` and return its CompletedProcess (exit code, stdout, stderr).

    In this process -- the command's own main(), as `python -m tinyscale.cli` runs it,
    its output read at the file descriptors -- unless the command needs a process of its
    own: an environment that changes what a process reads at start (XLA_FLAGS: the
    device count), a `preexec_fn` (its cores), or `sweep worker` (a multi-process job
    leaves with os._exit). In this process a command skips Python's and JAX's start
    (~1.5 s) and reuses the programs this worker compiled; `timeout` applies only to a
    subprocess."""
    args = [str(a) for a in args]
    merged = {**os.environ, **(env or {})}
    own_process = preexec_fn is not None or args[:2] == ["sweep", "worker"] or any(
        merged.get(k) != os.environ.get(k) for k in _READ_AT_START)
    if own_process:
        return subprocess.run([sys.executable, "-m", "tinyscale.cli", *args],
                              capture_output=True, text=True, env=merged, cwd=cwd or ROOT,
                              timeout=timeout, preexec_fn=preexec_fn)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with _output_to(out, err), mock.patch.dict(os.environ, env or {}), \
                _working_dir(cwd or ROOT):
            try:
                code = cli.main(args)
            except SystemExit as leaving:  # argparse's usage errors
                code = leaving.code if isinstance(leaving.code, int) else 1
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read().decode("utf-8", errors="replace"))
    return subprocess.CompletedProcess(["tinyscale", *args], code, *texts)


@contextlib.contextmanager
def _output_to(out, err):
    """File descriptors 1 and 2, and sys.stdout and sys.stderr, write to `out` and `err`
    inside the block (C code's output and Python's both), restored after."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved, streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.stdout, sys.stderr = (io.TextIOWrapper(io.FileIO(fd, "w", closefd=False),
                                               encoding="utf-8", write_through=True)
                              for fd in (1, 2))
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def _working_dir(path):
    """The current directory is `path` inside the block."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture
def command(capfd):
    """`command(*ARGS, env=...)`: run `tinyscale ARGS` in this process (the command's own
    main(), as `python -m tinyscale.cli` runs it) and return its CompletedProcess. For
    commands no signal or device count is sent to, such as refusals: a subprocess would
    spend 2 s importing jax for each. The output is read at the file descriptors, so a
    log line or warning from C code counts as it would in a terminal."""
    def call(*args, env=None):
        capfd.readouterr()
        with mock.patch.dict(os.environ, env or {}):
            code = cli.main([str(a) for a in args])
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(["tinyscale", *args], code, out, err)
    return call


@pytest.fixture
def refused(command):
    """`command`, named for the tests of refusals."""
    return command


SMOKE = os.path.join(ROOT, "sweeps", "quickstart.py") + ":smoke"


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory):
    """A data cache with the smoke corpus prepared, by `tinyscale data prepare` run in
    this process: once per test process, for every test that trains smoke runs (they
    only read it; tests of preparing data use their own)."""
    cache = str(tmp_path_factory.mktemp("smoke-cache"))
    assert cli.main(["data", "prepare", "--config", SMOKE,
                     f"--config.data.cache_dir={cache}"]) == 0
    return cache


@pytest.fixture(scope="module")
def env(smoke_cache):
    """Environment for launcher subprocesses (tests of sweeps): the data cache with the
    smoke corpus prepared (tests/data/tiny_sweep.py reads it)."""
    return {"TINYSCALE_TEST_CACHE": smoke_cache}


@pytest.fixture
def fake_tpu(env, tmp_path):
    """`fake_tpu(hosts=2)`: (root, environment) of a `gcloud` that acts
    (tests/fake_gcloud.py) for launchers of the TPU backend. At the test's end, passed
    or failed, every process started with that environment is killed -- launchers,
    gcloud calls, the slices' workers -- so a failing test leaves nothing running."""
    roots = []

    def make(hosts=2):
        root = tmp_path / f"gcloud{len(roots) or ''}"
        root.mkdir()
        roots.append(root)
        bin_dir = fake_gcloud.install(str(tmp_path / "bin"))
        return root, {**os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                      "FAKE_GCLOUD_ROOT": str(root), "FAKE_TPU_HOSTS": str(hosts)}
    yield make
    for root in roots:
        fake_gcloud.kill_all(str(root))


def wait_for(condition, proc, what, timeout=300, every=0.01):
    """Poll `condition` until it holds; fail if `proc` ends first or `timeout` passes.
    Every 10 ms by default: the process waited for shares this worker's core, and most
    conditions read and parse a file (at 1 ms the polls took ~35 s of the suite's
    samples); a test after a short-lived state (a save under way) asks for less."""
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            said = proc.stderr.read()[-2000:] if proc.stderr else "(its stderr: a file)"
            pytest.fail(f"the run ended before {what}: {said}")
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(every)


@contextlib.contextmanager
def held(*runs):
    """The run directories' locks held by another process (a second trainer, as a worker
    would see it) until the block ends or `release(i)`: no worker can take those runs, so
    a test decides when the last of a sweep's work may happen instead of racing it.
    Yields `release`."""
    holders = []
    for run in runs:
        os.makedirs(run, exist_ok=True)
        holders.append(subprocess.Popen(
            [sys.executable, "-c", "import sys; from tinyscale.train.rundir import RunDir; "
             f"assert RunDir({str(run)!r}).acquire(600); print('held', flush=True); "
             "sys.stdin.read()"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True))
    for holder in holders:
        assert holder.stdout.readline().strip() == "held"

    def release(i):
        if holders[i].poll() is None:
            holders[i].communicate("")
    try:
        yield release
    finally:
        for i in range(len(holders)):
            release(i)
