"""The sweep directory: sweep.json, one run directory per run, and per-run locks.

    <sweep_dir>/sweep.json        the expanded sweep: the sweep file's text and argument,
                                  the base config, and each run's name, overrides, config
    <sweep_dir>/runs/<name>/      a run directory (tinyscale/train/rundir.py) + `lock`
    <sweep_dir>/jax_cache/        the persistent compilation cache all its runs share
    <sweep_dir>/workers/          the heartbeats of slot workers (launch/worker.py)

Relaunching a sweep with new grid points adds them (the old runs keep their indices);
changing an existing run's config is refused. A run's lock is the run directory's own
(`RunDir.acquire`): every trainer takes it, the sweep workers as well as `tinyscale train`.
"""

from __future__ import annotations

import json

import ml_collections
from etils import epath

from tinyscale import config as config_lib
from tinyscale.errors import TinyscaleError
from tinyscale.launch.plan import Run
from tinyscale.storage import resolve, write_atomic
from tinyscale.train.rundir import RunDir


def _refuse_change(path, name: str, was: dict, now: dict, prefix: str = "") -> None:
    """One line naming the first knob of run `name` whose value changed."""
    for key in sorted(set(was) | set(now)):
        a, b = was.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            _refuse_change(path, name, a, b, f"{prefix}{key}.")
        elif a != b:
            raise TinyscaleError(
                f"{path} holds run {name} with config.{prefix}{key}={a!r}, not {b!r}: use a "
                "new --sweep-dir, or keep that run's settings (new grid points are added).")


def run_config(run: dict) -> ml_collections.ConfigDict:
    """The config of one run record of sweep.json (no re-reading of the file), over
    today's defaults (a sweep started by an older tinyscale lacks newer knobs)."""
    return config_lib.from_saved(run["config"])


class SweepDir:
    def __init__(self, path: str):
        self.path = resolve(path)
        self.file = self.path / "sweep.json"
        self.compilation_cache = self.path / "jax_cache"

    def create(self, spec: str, base, runs: list[Run]) -> list[Run]:
        """Write sweep.json; the sweep's runs, in its order.

        Relaunching into an existing sweep adds the grid points that are new (after the
        old ones, which keep their indices) and leaves the existing runs untouched; a run
        whose config changed is refused with the knob that differs."""
        path, _, arg = spec.partition(":")
        record = {"spec": spec, "arg": arg, "source": epath.Path(path).read_text(),
                  "base": base.to_dict(),
                  "runs": [{"index": r.index, "name": r.name, "overrides": r.overrides,
                            "config": r.values.to_dict()} for r in runs]}
        if not self.file.exists():
            write_atomic(self.file, json.dumps(record, indent=1, default=str) + "\n")
            return runs
        old = self.load()
        new = {r.name: r for r in runs}
        for run in old["runs"]:
            if run["name"] in new:  # a run's config over today's defaults (newer knobs)
                _refuse_change(self.path, run["name"], run_config(run).to_dict(),
                               new[run["name"]].values.to_dict())
        known = {r["name"] for r in old["runs"]}
        added = [{"index": len(old["runs"]) + k, "name": r.name, "overrides": r.overrides,
                  "config": r.values.to_dict()}
                 for k, r in enumerate(r for r in runs if r.name not in known)]
        if added:
            old.update(spec=spec, source=record["source"], runs=old["runs"] + added)
            write_atomic(self.file, json.dumps(old, indent=1, default=str) + "\n")
        return [Run(r["index"], r["name"], r["overrides"], config_lib.Values.of(
            run_config(r))) for r in old["runs"]]

    def load(self) -> dict:
        if not self.file.exists():
            raise TinyscaleError(f"{self.path} holds no sweep.json: start it with "
                                 "`tinyscale sweep run FILE --sweep-dir DIR`.")
        return json.loads(self.file.read_text())

    def runs(self) -> list[dict]:
        return self.load()["runs"]

    def config(self, index: int) -> ml_collections.ConfigDict:
        return run_config(self.runs()[index])

    def heartbeat(self, slot: int, host: str) -> epath.Path:
        return self.path / "workers" / f"slot{slot}-{host}.json"

    def heartbeats(self, slot: int) -> list[dict]:
        """The heartbeat records of slot `slot`'s worker processes (unreadable ones left
        out: one being replaced reads again at the next poll)."""
        out = []
        for path in (self.path / "workers").glob(f"slot{slot}-*.json"):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                pass
        return out

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
