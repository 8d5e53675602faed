"""The sweep directory: sweep.json, one run directory per run, and per-run locks.

    <sweep_dir>/sweep.json        the expanded sweep: the sweep file's text and argument,
                                  the base config, and each run's name, overrides, config
    <sweep_dir>/runs/<name>/      a run directory (tinyscale/rundir.py) + `lock`
    <sweep_dir>/jax_cache/        the persistent compilation cache all its runs share

A run's lock is the run directory's own (`RunDir.acquire`): every trainer takes it, the
sweep workers as well as a plain `tinyscale train`.
"""

from __future__ import annotations

import json

import ml_collections
from etils import epath

from tinyscale import config as config_lib
from tinyscale.errors import TinyscaleError
from tinyscale.launch.plan import Run
from tinyscale.rundir import RunDir, resolve, write_atomic


def run_config(run: dict) -> ml_collections.ConfigDict:
    """The config of one run record of sweep.json (no re-reading of the file), over
    today's defaults (a sweep started by an older tinyscale lacks newer knobs)."""
    return config_lib.from_saved(run["config"])


class SweepDir:
    def __init__(self, path: str):
        self.path = resolve(path)
        self.file = self.path / "sweep.json"
        self.compilation_cache = self.path / "jax_cache"

    def create(self, spec: str, base, runs: list[Run]) -> None:
        """Write sweep.json; a directory holding a different sweep is refused."""
        path, _, arg = spec.partition(":")
        record = {"spec": spec, "arg": arg, "source": epath.Path(path).read_text(),
                  "base": base.to_dict(),
                  "runs": [{"index": r.index, "name": r.name, "overrides": r.overrides,
                            "config": r.values.to_dict()} for r in runs]}
        if self.file.exists():
            old = self.load()
            then = [run_config(r).to_dict() for r in old["runs"]]  # knobs added since:
            if [r["name"] for r in old["runs"]] != [r["name"] for r in record["runs"]] or \
                    then != [r["config"] for r in record["runs"]]:  # their defaults
                raise TinyscaleError(
                    f"{self.path} holds a different sweep ({old['spec']}): use a new "
                    "--sweep-dir, or the same sweep file to continue it.")
            return
        write_atomic(self.file, json.dumps(record, indent=1, default=str) + "\n")

    def load(self) -> dict:
        if not self.file.exists():
            raise TinyscaleError(f"{self.path} holds no sweep.json: start it with "
                                 "`tinyscale sweep run FILE --sweep-dir DIR`.")
        return json.loads(self.file.read_text())

    def runs(self) -> list[dict]:
        return self.load()["runs"]

    def config(self, index: int) -> ml_collections.ConfigDict:
        return run_config(self.runs()[index])

    def rundir(self, name: str) -> RunDir:
        return RunDir(self.path / "runs" / name)

    # ---- which runs are left, and who trains them ----------------------------------

    def runnable(self, run: dict, max_attempts: int) -> bool:
        """Not done, and not failed `max_attempts` times already."""
        state = self.rundir(run["name"]).state()
        return state.get("state") != "done" and not (
            state.get("state") == "failed" and state.get("attempts", 0) >= max_attempts)

    def lock_owner(self, name: str, stale_after_s: float) -> dict | None:
        return self.rundir(name).lock_owner(stale_after_s)

    def claim(self, name: str, stale_after_s: float) -> bool:
        """Take the run's lock (the one every trainer takes); False if another holds it."""
        return self.rundir(name).acquire(stale_after_s)

    def release(self, name: str) -> None:
        self.rundir(name).release()
