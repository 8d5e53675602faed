"""Process 0's metric writers: metrics.jsonl, TensorBoard events, Weights & Biases (when
config.output.wandb is on), and the progress line."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tinyscale.errors import TinyscaleError
from tinyscale.storage import is_remote, write_atomic
from tinyscale.train.rundir import RunDir


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def wandb_run(run: RunDir, output, config: dict):
    """A Weights & Biases run for this run directory: named after it, grouped by its sweep,
    with an id derived from its path, so a resumed run continues the same W&B run."""
    try:
        import wandb  # optional: the wandb extra
    except ImportError:
        raise TinyscaleError("config.output.wandb=True needs wandb: pip install "
                             "'tinyscale[wandb]' (or set --config.output.wandb=False).") \
            from None
    sweep = run.path.parent.parent.name if run.path.parent.name == "runs" else None
    return wandb.init(
        project=output.wandb_project, entity=output.wandb_entity or None, name=run.path.name,
        group=sweep, config=config, dir=str(run.path), resume="allow",
        id=hashlib.sha256(str(run.path).encode()).hexdigest()[:16],
        settings=wandb.Settings(silent=True))


def router(out: dict) -> dict:
    """A mixture of experts' router metrics from a train step's output ({} when dense):
    the balance and z losses, and each expert's share of the token assignments per layer
    (expert_load, [layers][experts]) with its max and min, so a collapse shows."""
    if "expert_load" not in out:
        return {}
    load = np.asarray(out["expert_load"])
    return {"moe_balance": float(out["moe_balance"]), "moe_z": float(out["moe_z"]),
            "expert_load_max": float(load.max()), "expert_load_min": float(load.min()),
            "expert_load": np.round(load, 4).tolist()}


class MetricsWriter:
    """Writes on process 0 only; every other process gets a writer that does nothing."""

    def __init__(self, run: RunDir, total_steps: int, enabled: bool, tensorboard: bool,
                 progress: bool, wandb=None):
        """`wandb`: a started W&B run (`wandb_run`) to log to as well, or None."""
        self.run, self.total_steps, self.enabled = run, total_steps, enabled
        self.progress = progress and enabled
        self.tty = sys.stderr.isatty()
        self._tb, self._wandb = None, wandb if enabled else None
        self._lines = None  # on gs://, the file's lines so far (read at the first write)
        if enabled and tensorboard:
            self._tb = EventFileWriter(str(run.tensorboard))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        line = json.dumps(record) + "\n"
        if is_remote(self.run.metrics):  # object stores cannot append: rewrite it whole
            if self._lines is None:
                self._lines = [json.dumps(m) + "\n" for m in self.run.read_metrics()]
            self._lines.append(line)
            write_atomic(self.run.metrics, "".join(self._lines))
        else:
            with self.run.metrics.open("a") as f:
                f.write(line)
        if self._tb:
            values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                      for k, v in record.items() if k != "step" and isinstance(v, (int, float))]
            self._tb.add_event(event_pb2.Event(wall_time=time.time(), step=record["step"],
                                               summary=summary_pb2.Summary(value=values)))
        if self._wandb:
            self._wandb.log({k: v for k, v in record.items()
                             if k != "step" and isinstance(v, (int, float))}, step=record["step"])
        if self.progress and "train_loss" in record:
            self._progress(record)

    def _progress(self, r: dict) -> None:
        left = (self.total_steps - r["step"]) * r["tokens"] / max(r["step"], 1) / max(
            r.get("tokens_per_s") or 0.0, 1e-9)
        line = (f"{self.run.path.name}  step {r['step']:>6}/{self.total_steps}  "
                f"loss {r['train_loss']:.4f}  "
                f"{r.get('tokens_per_s', 0) / 1e3:7.1f}K tok/s  mfu {r.get('mfu', 0):5.1%}  "
                f"eta {_duration(left)}")
        if "eval_loss" in r:
            line += f"  eval {r['eval_loss']:.4f}"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            print(("\n" if self.tty else "") + text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._tb:
            self._tb.close()
        if self._wandb:
            self._wandb.finish()
            self._wandb = None
        if self.progress and self.tty:
            print(file=sys.stderr)


# Dense bf16 peak FLOP/s per chip, from the vendors' data sheets.
_PEAKS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
          "TPU v6 lite": 918e12, "TPU v6e": 918e12, "H100": 989e12, "H200": 989e12,
          "A100": 312e12}
_measured: dict[str, float] = {}


PEAKS_FILE = "peak_flops.json"  # in the cache dir: measured peaks, by machine


def peak_flops(configured: float = 0.0, cache_dir: str = "") -> float:
    """Peak FLOP/s of all local devices: configured, a known chip, or measured (CPU).

    A measured peak is kept in `cache_dir`/PEAKS_FILE, keyed by host, device kind and
    count and usable cores: every run on this machine divides by the same peak (its MFU
    comparable across runs) and none spends a second measuring it again. Delete the file
    to measure again."""
    if configured:
        return configured
    kind = jax.devices()[0].device_kind
    for name, peak in _PEAKS.items():
        if name.lower() in kind.lower():
            return peak * jax.device_count()
    if kind not in _measured:
        _measured[kind] = _kept_peak(kind, cache_dir)
    return _measured[kind]


def _kept_peak(kind: str, cache_dir: str) -> float:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    key = f"{socket.gethostname()}|{kind}|{jax.device_count()} devices|{cores} cores"
    path = os.path.join(os.path.expanduser(cache_dir), PEAKS_FILE) \
        if cache_dir and not is_remote(cache_dir) else ""
    try:
        with open(path) as f:
            known = json.load(f)
        if isinstance(known.get(key), float) and known[key] > 0:
            return known[key]
    except (OSError, ValueError, AttributeError):  # none yet, or unreadable: measure
        known = {}
    peak = measure_matmul_peak()
    if path:
        try:
            write_atomic(epath.Path(path), json.dumps({**known, key: peak}, indent=1))
        except OSError:  # a read-only cache: measured again next time
            pass
    return peak


def measure_matmul_peak(sizes=(1024, 2048), repeats: int = 10) -> float:
    """Best float32 FLOP/s of square matmuls on the default device (the CPU's peak).

    The best of several sizes and repeats: a shared machine's rate varies by ~20%.
    """
    matmul, best = jax.jit(lambda x: x @ x), 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        matmul(a).block_until_ready()
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a).block_until_ready()
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best
