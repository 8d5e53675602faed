"""The run directory: the contract between train, eval, launch and analysis.

    <workdir>/config.json   the resolved config      <workdir>/state.json  run state
    <workdir>/metrics.jsonl one object per log step  <workdir>/tb/         TensorBoard
    <workdir>/checkpoints/  orbax                    <workdir>/eval.json, samples.jsonl

Paths go through etils.epath, so a workdir may be local or gs://. Every JSON writer is
atomic (temp file, then rename): a kill at any moment leaves the previous good file.
"""

from __future__ import annotations

import json
import os
import socket
import time

from etils import epath

STATES = ("pending", "running", "done", "failed")


def resolve(path: str | os.PathLike) -> epath.Path:
    """A local path made absolute (orbax refuses relative ones; a relative path would also
    change meaning with the working directory); gs:// and other URLs as they are."""
    path = os.fspath(path)
    return epath.Path(path if "://" in path else os.path.abspath(path))


class RunDir:
    def __init__(self, workdir: str | os.PathLike):
        self.path = resolve(workdir)

    config = property(lambda self: self.path / "config.json")
    state_file = property(lambda self: self.path / "state.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    tensorboard = property(lambda self: self.path / "tb")
    eval = property(lambda self: self.path / "eval.json")
    samples = property(lambda self: self.path / "samples.jsonl")

    def read_json(self, path: epath.Path, default=None):
        return json.loads(path.read_text()) if path.exists() else default

    def write_json(self, path: epath.Path, value) -> None:
        write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")

    def state(self) -> dict:
        return self.read_json(self.state_file, {"state": "pending", "attempts": 0})

    def set_state(self, state: str, **fields) -> dict:
        assert state in STATES, state
        current = self.state()
        current.update(fields, state=state, host=socket.gethostname(), pid=os.getpid(),
                       heartbeat=time.time())
        self.write_json(self.state_file, current)
        return current

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        records = []
        for line in self.metrics.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut short by a kill
                pass
        return records

    def truncate_metrics(self, last_step: int) -> None:
        """Drop metric lines past `last_step` (work lost since the restored checkpoint)."""
        kept = [m for m in self.read_metrics() if m["step"] <= last_step]
        write_atomic(self.metrics, "".join(json.dumps(m) + "\n" for m in kept))


def write_atomic(path: epath.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text)
    tmp.replace(path)
