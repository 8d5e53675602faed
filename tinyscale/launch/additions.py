"""Runs added to an existing sweep by `tinyscale sweep next --run`, as a sweep file.

The proposed runs are written as an ordinary sweep file, SWEEP_DIR/next/next-<k>.py
(k = 1, 2, ...; an existing one is never overwritten): its get_config() returns the
sweep's recorded base config (sweep.json's `base`, over today's defaults) and its
sweep() the runs' overrides. It then goes the way of every sweep file (`plan.expand`,
`SweepDir.create`: the runs are appended to sweep.json, existing runs untouched, a
changed one refused), so `tinyscale sweep run SWEEP_DIR/next/next-<k>.py --sweep-dir
SWEEP_DIR [--backend slurm]` trains or resumes the same runs.
"""

from __future__ import annotations

import datetime
import json

from tinyscale.errors import TinyscaleError
from tinyscale.launch import plan
from tinyscale.launch.sweepdir import SweepDir

_TEMPLATE = '''"""Runs added to {sweep} by `tinyscale sweep next` on {date}: {why}.

    tinyscale sweep run {path} --sweep-dir {sweep}
"""

import json

from tinyscale import config as config_lib

BASE = json.loads({base!r})
RUNS = json.loads({runs!r})


def get_config(arg: str = ""):
    return config_lib.from_saved(BASE)


def sweep(arg: str = ""):
    return [dict(run) for run in RUNS]
'''


def write(sweep_dir: str, overrides: list[dict], why: str) -> str:
    """The path of a new sweep file holding `overrides` over the sweep's base config."""
    sweep = SweepDir(sweep_dir)
    if str(sweep.path).startswith("gs://"):
        raise TinyscaleError(f"--run writes a local sweep file and {sweep_dir} is on gs://: "
                             "run `sweep next` without --run and add the runs with a sweep "
                             "file of your own (`tinyscale sweep run FILE --sweep-dir DIR`).")
    record = sweep.load()
    folder = sweep.path / "next"
    folder.mkdir(parents=True, exist_ok=True)
    k = 1
    while (folder / f"next-{k}.py").exists():
        k += 1
    path = folder / f"next-{k}.py"
    path.write_text(_TEMPLATE.format(
        sweep=sweep_dir, date=datetime.date.today().isoformat(), why=why, path=path,
        base=json.dumps(record["base"], default=str), runs=json.dumps(overrides)))
    return str(path)


def add(sweep_dir: str, overrides: list[dict], why: str):
    """(the sweep file, its base config, every run of the sweep) after adding
    `overrides` to the sweep."""
    spec = write(sweep_dir, overrides, why)
    base, runs = plan.expand(spec)
    return spec, base, SweepDir(sweep_dir).create(spec, base, runs)
