"""Up to six tiny runs (four by default) for launcher tests: quickstart smoke, 30 steps.
':pack': four runs of one shape for launch.pack, the last diverges; ':pack3' the first
three, held-out loss only (tests/test_pack.py).
':seedsN': N runs of one shape (d32-L1), seeds 0..N-1: one compiled program serves
them all, for tests of launching rather than of shapes.
':budgets': three wsd runs of 30 steps, each with branches at 10 and 20 steps, logging
every step (held-out loss only): tests/test_branches.py."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "quickstart", os.path.join(os.path.dirname(__file__), "..", "..", "sweeps", "quickstart.py"))
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)


def get_config(arg: str = ""):
    c = quickstart.get_config("smoke")
    c.data.cache_dir = os.environ.get("TINYSCALE_TEST_CACHE", c.data.cache_dir)
    c.eval.update(at_end=True, prompts=4, max_new_tokens=24)
    c.launch.update(slurm_cpus=1, slurm_max_parallel=2, slurm_time="00:10:00")
    c.output.peak_flops = 1e11
    if arg == "pack3":
        c.eval.at_end = False
    if arg == "budgets":
        c.train.update(schedule="wsd", branches=(5120, 10240), log_every=1)
        c.eval.at_end = False
    return c


def sweep(arg: str = ""):
    if arg in ("pack", "pack3"):  # one shape: seeds, learning rates; one run diverges
        return [{"seed": 0}, {"seed": 1}, {"seed": 0, "train.lr": 1e-2},
                {"seed": 2, "train.lr": 1e30}][:4 if arg == "pack" else 3]
    if arg == "budgets":
        return [{"model.d_model": w, "model.n_layers": 1, "model.n_heads": 2}
                for w in (16, 24, 32)]
    if arg.startswith("seeds"):
        return [{"seed": s, "model.d_model": 32, "model.n_layers": 1, "model.n_heads": 2}
                for s in range(int(arg[5:]))]
    count = int(arg or 4)
    widths = [16, 24, 32, 40, 48, 56][:count]
    return [{"model.d_model": w, "model.n_layers": 1, "model.n_heads": 2} for w in widths]
