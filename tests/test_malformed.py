"""Every user mistake: one line naming the knob and the fix, exit 2, nothing lost.

One table of malformed inputs and faults, run through the real `tinyscale` command.
Each case asserts the exit code, a one-line message with the knob (or file) it names,
no traceback, and an md5 of every file of a neighbouring finished run unchanged.
"""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SMOKE, run_cli

TINY = os.path.join(ROOT, "tests", "data", "tiny_sweep.py")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder with a prepared data dir and a finished neighbour run that uses it."""
    root = tmp_path_factory.mktemp("world")
    data = root / "data"
    result = run_cli("train", "--config", SMOKE, "--workdir", str(root / "done"),
                     f"--config.data.cache_dir={root / 'cache'}", f"--config.data.dir={data}",
                     "--config.train.steps=20", "--config.output.peak_flops=1e11")
    assert result.returncode == 0, result.stderr
    return root


def md5s(folder) -> dict:
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.md5(f.read()).hexdigest()
    return out


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def config_file(w, body):
    return write(w / "cfg" / f"c{abs(hash(body))}.py",
                 "from tinyscale.config import get_config as default_config\n" + body)


def train(w, *extra, workdir=None):
    return ["train", "--config", SMOKE, "--workdir", str(workdir or w / "new"),
            f"--config.data.cache_dir={w / 'cache'}", f"--config.data.dir={w / 'data'}",
            *extra]


def damaged_data(w, name, size):
    """A copy of the data dir with `name` cut to `size` bytes ("even" or "odd": about
    half, an even or an odd count)."""
    copy = w / f"data-{name}-{size}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(w / "data", copy)
    path = copy / name
    data = path.read_bytes()
    if isinstance(size, str):
        size = len(data) // 4 * 2 + (size == "odd")
    path.write_bytes(data[:size])
    return copy


def run_on_damaged_tokenizer(w):
    """A copy of the finished run whose data dir has a truncated tokenizer."""
    data = damaged_data(w, "tokenizer.model", 100)
    run = w / "run-bad-tokenizer"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(w / "done", run)
    config = (run / "config.json").read_text().replace(str(w / "data"), str(data))
    (run / "config.json").write_text(config)
    return run


def prepare_other_settings(w):
    data = w / "data-vocab"
    if not (data / "meta.json").exists():
        assert run_cli("data", "prepare", "--config", SMOKE, f"--data-dir={data}",
                       f"--config.data.cache_dir={w / 'cache'}",
                       "--config.data.vocab_size=256").returncode == 0
    return data


def sweep_file(w, body):
    return config_file(w, "from tinyscale.launch.plan import product\n"
                          "def get_config(arg=''):\n    return default_config()\n" + body)


def a_file(w):
    return write(w / "plain-file", "not a folder\n")


def run_without_checkpoints(w):
    run = w / "no-ckpt"
    os.makedirs(run, exist_ok=True)
    shutil.copy(w / "done" / "config.json", run / "config.json")
    return run


def foreign_checkpoints(w):
    os.makedirs(w / "foreign" / "checkpoints" / "5", exist_ok=True)
    return w / "foreign"


def started_sweep(w):
    sweep = w / "sweep-one"
    if not (sweep / "sweep.json").exists():
        from tinyscale.launch import plan
        from tinyscale.launch.sweepdir import SweepDir
        SweepDir(str(sweep)).create(TINY + ":1", *plan.expand(TINY + ":1", {}))
    return sweep


# (case, argv builder taking the world folder, text the one line must contain)
CASES = [
    # config files and overrides
    ("unknown variant", lambda w: [SMOKE.replace("smoke", "large") if a == SMOKE else a
                                   for a in train(w)], "unknown variant 'large'"),
    ("get_config returns None", lambda w: ["train", "--config", config_file(
        w, "def get_config(arg=''):\n    c = default_config()\n"), "--workdir",
        str(w / "new")], "returned NoneType"),
    ("get_config raises NameError", lambda w: ["train", "--config", config_file(
        w, "def get_config(arg=''):\n    return defualt_config()\n"), "--workdir",
        str(w / "new")], "NameError"),
    ("config imports a missing module", lambda w: ["train", "--config", config_file(
        w, "import no_such_module\n"), "--workdir", str(w / "new")], "no_such_module"),
    ("config syntax error", lambda w: ["train", "--config", config_file(
        w, "def get_config(:\n"), "--workdir", str(w / "new")], "syntax error"),
    ("config file missing", lambda w: ["train", "--config", str(w / "nope.py"), "--workdir",
                                       str(w / "new")], "does not exist"),
    ("config without get_config", lambda w: ["train", "--config", config_file(w, "x = 1\n"),
                                             "--workdir", str(w / "new")], "get_config"),
    ("unknown key", lambda w: train(w, "--config.no.such.key=1"), "config.no"),
    ("wrong type", lambda w: train(w, "--config.model.d_model=wide"), "model.d_model"),
    ("a section set as a knob", lambda w: train(w, "--config.model=1"), "section"),
    ("heads do not divide width", lambda w: train(w, "--config.model.n_heads=3"),
     "model.n_heads"),
    ("negative learning rate", lambda w: train(w, "--config.train.lr=-1.0"), "train.lr"),
    ("negative temperature", lambda w: train(w, "--config.eval.temperature=-1.0"),
     "eval.temperature"),
    ("mesh does not fit", lambda w: train(w, "--config.mesh.tensor=3"), "mesh"),
    ("vocabulary too small", lambda w: train(w, "--config.data.vocab_size=10"),
     "data.vocab_size"),
    ("TPU poll of zero", lambda w: train(w, "--config.launch.tpu_poll_s=0.0"),
     "launch.tpu_poll_s"),
    # where a run may live
    ("workdir inside a run's checkpoints", lambda w: train(
        w, workdir=w / "done" / "checkpoints" / "20"), "inside the run directory"),
    ("workdir inside a run", lambda w: train(w, workdir=w / "done" / "sub"),
     "inside the run directory"),
    ("workdir is a file", lambda w: train(w, workdir=a_file(w)), "is a file"),
    ("workdir with foreign checkpoints", lambda w: train(w, workdir=foreign_checkpoints(w)),
     "not a tinyscale run"),
    ("another config in a finished run", lambda w: train(
        w, "--config.train.steps=20", "--config.model.d_model=48", workdir=w / "done"),
     "holds a run with config.model.d_model"),
    ("gs:// without gcsfs", lambda w: train(w, workdir="gs://bucket/run"),
     "tinyscale[gcs]"),
    # data
    ("noise share of 1", lambda w: train(w, "--config.data.noise=1.0"), "data.noise="),
    ("noise kind of another corpus", lambda w: train(
        w, "--config.data.dataset=tinystories", "--config.data.noise=0.2",
        "--config.data.noise_kinds=wrong_pronoun"), "data.noise_kinds"),
    ("grammar filter on TinyStories", lambda w: train(
        w, "--config.data.dataset=tinystories", "--config.data.filter=grammar"),
     "data.filter"),
    ("filter keeps nothing", lambda w: train(w, "--config.data.filter=grammar",
                                             "--config.data.filter_keep=0.0"),
     "data.filter_keep"),
    ("data dir of another noise share", lambda w: train(w, "--config.data.noise=0.5"),
     "not 0.5"),
    ("data dir is a file", lambda w: train(w)[:-1] + [f"--config.data.dir={a_file(w)}"],
     "is a file"),
    ("prepare into a file", lambda w: ["data", "prepare", "--data-dir", a_file(w)],
     "is a file"),
    ("data dir of other settings", lambda w: train(w)[:-1] + [
        f"--config.data.dir={prepare_other_settings(w)}"], "config.data.vocab_size=256"),
    ("train.bin cut to an even size", lambda w: train(w)[:-1] + [
        f"--config.data.dir={damaged_data(w, 'train.bin', 'even')}"], "train.bin holds"),
    ("train.bin cut to an odd size", lambda w: train(w)[:-1] + [
        f"--config.data.dir={damaged_data(w, 'train.bin', 'odd')}"], "train.bin holds"),
    ("truncated tokenizer: train", lambda w: train(w)[:-1] + [
        f"--config.data.dir={damaged_data(w, 'tokenizer.model', 100)}"], "tokenizer.model"),
    ("truncated tokenizer: eval", lambda w: ["eval", str(run_on_damaged_tokenizer(w))],
     "tokenizer.model"),
    ("truncated tokenizer: sample", lambda w: ["sample", str(run_on_damaged_tokenizer(w))],
     "tokenizer.model"),
    ("truncated tokenizer: data show", lambda w: [
        "data", "show", "--data-dir", str(damaged_data(w, "tokenizer.model", 100))],
     "tokenizer.model"),
    ("meta.json not JSON", lambda w: ["data", "show", "--data-dir", str(
        damaged_data(w, "meta.json", 10))], "meta.json"),
    ("data show of nothing", lambda w: ["data", "show", "--data-dir", str(w / "nothing")],
     "data prepare"),
    ("TinyStories manual dir without the files", lambda w: [
        "data", "prepare", "--dataset", "tinystories", "--manual-dir", str(w / "cfg"),
        "--data-dir", str(w / "ts"), f"--config.data.cache_dir={w / 'cache'}"], "lacks"),
    ("override for a command without config", lambda w: [
        "data", "show", "--data-dir", str(w / "data"), "--config.seed=1"], "does not apply"),
    # eval and sample
    ("eval without a checkpoint", lambda w: ["eval", str(run_without_checkpoints(w))],
     "no checkpoint"),
    ("eval of a folder that is no run", lambda w: ["eval", str(w / "cfg")],
     "not a run directory"),
    ("eval at a step never saved", lambda w: ["eval", str(w / "done"), "--step", "7"],
     "no checkpoint at step 7"),
    ("eval changes the model", lambda w: ["eval", str(w / "done"),
                                          "--config.model.d_model=8"], "cannot change"),
    ("eval with an unknown key", lambda w: ["eval", str(w / "done"), "--config.eval.nope=1"],
     "config.eval.nope"),
    ("sample --n 0", lambda w: ["sample", str(w / "done"), "--n", "0"], "--n"),
    ("sample --max-new-tokens -5", lambda w: ["sample", str(w / "done"),
                                              "--max-new-tokens", "-5"], "--max-new-tokens"),
    ("sample --temperature -1", lambda w: ["sample", str(w / "done"), "--temperature", "-1"],
     "--temperature"),
    ("sample --top-p 1.5", lambda w: ["sample", str(w / "done"), "--top-p", "1.5"], "--top-p"),
    ("sample --beams 0", lambda w: ["sample", str(w / "done"), "--beams", "0"], "--beams"),
    ("sample changes the data", lambda w: ["sample", str(w / "done"),
                                           "--config.data.vocab_size=64"], "cannot change"),
    # sweeps
    ("sweep() raises", lambda w: ["sweep", "plan", sweep_file(
        w, "def sweep():\n    return [{'model.d_model': WIDTH}]\n")], "NameError"),
    ("sweep() returns a number", lambda w: ["sweep", "plan", sweep_file(
        w, "def sweep():\n    return 3\n")], "not a list"),
    ("train.lr=nan", lambda w: ["train", "--config", SMOKE, "--workdir", str(w / "x"),
                                "--config.train.lr=nan"], "config.train.lr"),
    ("eval.temperature=inf", lambda w: ["train", "--config", SMOKE, "--workdir",
                                        str(w / "x"), "--config.eval.temperature=inf"],
     "config.eval.temperature"),
    ("export --out inside the run", lambda w: ["export", str(w / "done"), "--out",
                                               str(w / "done" / "checkpoints" / "hf")],
     "inside the run directory"),
    ("a NaN from a sweep file", lambda w: ["sweep", "plan", sweep_file(
        w, "def sweep():\n    return [{'train.lr': float('nan')}]\n")], "use a finite number"),
    ("Adam beta 1", lambda w: ["train", "--config", SMOKE, "--workdir", str(w / "x"),
                               "--config.train.b2=1.0"], "config.train.b2"),
    ("a negative seed", lambda w: ["train", "--config", SMOKE, "--workdir", str(w / "x"),
                                   "--config.seed=-3"], "config.seed=-3"),
    ("a negative data seed", lambda w: ["data", "prepare", "--config", SMOKE,
                                        "--config.data.noise_seed=-1"],
     "config.data.noise_seed"),
    ("two grid points, one config", lambda w: ["sweep", "plan", sweep_file(
        w, "def sweep():\n    return [{'model.d_model': 64}, {'model.d_model': 64, "
        "'seed': 0}]\n")], "same effective config"),
    ("sweep override of the wrong type", lambda w: ["sweep", "plan", sweep_file(
        w, "def sweep():\n    return [{'model.n_layers': 1.5}]\n")], "model.n_layers"),
    ("a changed run in a sweep dir", lambda w: [
        "sweep", "run", TINY + ":1", "--sweep-dir", str(started_sweep(w)),
        "--config.train.lr=0.001"], "holds run d16-L1-h2 with config."),
    ("sweep status of a run dir", lambda w: ["sweep", "status", str(w / "done")],
     "no sweep.json"),
    ("worker index out of range", lambda w: ["sweep", "worker", str(started_sweep(w)),
                                             "--index", "9"], "--index 9"),
    ("analyze a folder with nothing", lambda w: ["analyze", str(w / "cfg")], "neither"),
    ("analyze --threshold 2", lambda w: ["analyze", str(w / "done"), "--threshold", "2"],
     "--threshold"),
    ("unknown command", lambda w: ["trian"], "invalid choice"),
]


@pytest.mark.parametrize("build, says", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_one_line_exit_2_and_loses_nothing(world, build, says, refused,
                                                               monkeypatch):
    """Each case through the command's main() in this process (the test below runs a few
    through `python -m tinyscale.cli` itself)."""
    if "gcs]" in says:  # a machine without gcsfs: importing it fails
        monkeypatch.setitem(sys.modules, "gcsfs", None)
    before = md5s(world / "done")
    argv = build(world)
    result = refused(*argv, env={"TINYSCALE_TEST_CACHE": str(world / "cache")})
    err = result.stderr.strip()
    assert result.returncode == 2, (argv, result.stdout[-500:], err[-2000:])
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert err.startswith("tinyscale: error: ") and says in err, err
    assert md5s(world / "done") == before
    assert not (world / "no-ckpt" / "checkpoints").exists()  # eval created nothing


@pytest.mark.parametrize("case", ["unknown key", "gs:// without gcsfs", "unknown command"])
def test_the_command_itself_says_one_line_and_exits_2(world, case):
    """The same as above through `python -m tinyscale.cli`, with a gcsfs that cannot be
    imported on the path for the gs:// case."""
    _, build, says = next(c for c in CASES if c[0] == case)
    env = {"TINYSCALE_TEST_CACHE": str(world / "cache")}
    if "gcs]" in says:
        blocked = world / "no-gcsfs"
        write(blocked / "gcsfs" / "__init__.py", "raise ImportError('gcsfs is absent')\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(blocked),
                                                          os.environ.get("PYTHONPATH")]))
    result = run_cli(*build(world), env=env)
    err = result.stderr.strip()
    assert result.returncode == 2 and err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("tinyscale: error: ") and says in err, err


def test_a_second_trainer_of_a_locked_run_is_refused(world):
    """A live process holding the run's lock (as a trainer does) keeps others out."""
    workdir = world / "locked"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tinyscale.train.rundir import RunDir; "
         f"assert RunDir({str(workdir)!r}).acquire(600); print('held', flush=True); "
         "sys.stdin.read()"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_cli(*train(world, workdir=workdir))
        assert result.returncode == 2 and "is being trained by pid" in result.stderr
        assert result.stderr.strip().count("\n") == 0
        assert not (workdir / "checkpoints").exists()
    finally:
        holder.communicate("")
    # the holder is gone: the kernel dropped its lock, and the run trains
    result = run_cli(*train(world, "--config.train.steps=5", "--config.eval.at_end=False",
                            workdir=workdir))
    assert result.returncode == 0, result.stderr
