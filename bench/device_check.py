"""The device check (bench/device_check.sh runs it; docs/gpu.md): what one accelerator
does with tinyscale, in one JSON and one Markdown table.

    python bench/device_check.py [--out DIR] [--dry-run]

Five stages, each in its own process (a stage that fails or runs out of its time is
recorded, and the others still run with the whole device): env (versions, devices,
the peak MFU is read against), steps (tokens/s and MFU of the train step, bench/train.py,
at four shapes of gpt_neo and llama, in the device's default dtype and attention),
attention (each implementation this device runs against the blocked XLA attention:
values, gradients, time), packing (models/hour at d64 for K = 1, 8, 32, bench/pack.py)
and sweep (the quickstart sweep's smoke variant end to end: train, evaluate, report).
`--dry-run` runs every stage at toy sizes, on CPU in about a minute. (Over 300 lines:
the stages, their driver and the report they fill are one script a GPU session runs
whole; the measuring itself is bench/train.py's and bench/pack.py's.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import pack as pack_bench  # noqa: E402
from bench import train as train_bench  # noqa: E402
from tinyscale import config as config_lib  # noqa: E402
from tinyscale import process  # noqa: E402
from tinyscale.model import attention  # noqa: E402
from tinyscale.model.spec import ModelSpec  # noqa: E402
from tinyscale.train import metrics  # noqa: E402

# name: (d_model, layers, heads, sequence, batch, vocabulary), 32K tokens a step; ~30M
# and ~125M are the shapes of TinyStories-33M and GPT-Neo-125M (vocabulary 50257: 124M
# parameters). Largest first: the goal's shape is measured before any time runs out.
SHAPES = {"125M": (768, 12, 12, 1024, 32, 50257), "30M": (768, 4, 12, 1024, 32, 4096),
          "d512": (512, 8, 8, 512, 64, 4096), "d256": (256, 4, 4, 256, 128, 4096)}
TOY_SHAPES = {"d64": (64, 2, 4, 64, 4, 256), "d32": (32, 1, 2, 64, 4, 256)}
FAMILIES = ("gpt_neo", "llama")
PACK_K, TOY_PACK_K = (8, 32), (2, 4)
# seconds each stage may take: 8 minutes in all
LIMITS = {"env": 30, "steps": 240, "attention": 45, "packing": 75, "sweep": 90}
QUICKSTART = os.path.join(ROOT, "sweeps", "quickstart.py") + ":smoke"


def _versions() -> dict:
    names = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "libtpu", "flax",
             "optax", "nvidia-cudnn-cu13", "nvidia-cudnn-cu12")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def stage_env(dry_run: bool) -> dict:
    device = jax.devices()[0]
    m = config_lib.get_config().model
    spec = ModelSpec.from_config(m, 256).on()
    smi = subprocess.run("nvidia-smi", shell=True, capture_output=True, text=True)
    return {"python": platform.python_version(), "versions": _versions(),
            "platform": jax.default_backend(), "device_kind": device.device_kind,
            "devices": jax.device_count(), "peak_flops": metrics.peak_flops(),
            "defaults": {"dtype": spec.dtype, "param_dtype": spec.param_dtype,
                         "attention": spec.attention},
            "nvidia_smi": smi.stdout if smi.returncode == 0 else ""}


def stage_steps(dry_run: bool):
    """Yields one row per (family, shape), as each is measured."""
    peak = metrics.peak_flops()
    for name, (d, layers, heads, seq, batch, vocab) in (TOY_SHAPES if dry_run
                                                         else SHAPES).items():
        for family in FAMILIES:
            total, _, compile_s, rate, mfu, _ = train_bench.bench_shape(
                d, layers, heads, 3 if dry_run else 30, seq_len=seq, batch_size=batch,
                vocab=vocab, peak=peak, family=family)
            yield {"family": family, "shape": name, "d_model": d, "layers": layers,
                   "heads": heads, "seq_len": seq, "batch": batch, "params": total,
                   "seq_x_batch": f"{seq} x {batch}",
                   "compile_s": compile_s, "tokens_per_s": rate, "mfu": mfu}


def _attention_paths(platform_name: str, dry_run: bool) -> dict:
    paths = {"jax.nn xla": lambda *x: attention.fused_attention(*x, implementation="xla")}
    if platform_name == "gpu":
        paths["cudnn"] = lambda *x: attention.fused_attention(*x, implementation="cudnn")
    if platform_name == "tpu":
        paths["splash"] = attention.splash_attention
    if dry_run:  # the kernel in Pallas's interpreter: slow, so only at toy sizes
        paths["splash (interpreted)"] = lambda q, k, v, s, w: attention.splash_attention(
            q, k, v, s, w, interpret=True)
    return paths


def _time_attention(fn, q, k, v, weights, window, repeats: int):
    """(values and gradients of sum(weights * fn(q, k, v)), seconds per call), jitted."""
    e = q.shape[-1]
    f = jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(
        weights * fn(q, k, v, e ** -0.5, window).astype(jnp.float32)), argnums=(0, 1, 2)))
    out = jax.block_until_ready(f(q, k, v))
    start = time.perf_counter()
    for _ in range(repeats):
        out = f(q, k, v)
    jax.block_until_ready(out)
    return [np.asarray(x, np.float32) for x in jax.tree.leaves(out)], \
        (time.perf_counter() - start) / repeats


def stage_attention(dry_run: bool):
    """Each path against causal_attention (xla): forward and gradients, and time."""
    platform_name = jax.default_backend()
    dtype = jnp.dtype(ModelSpec.from_config(config_lib.get_config().model, 256).on().dtype)
    b, t, h, e = (2, 128, 4, 16) if dry_run else (8, 1024, 12, 64)
    for window, kv in ((None, h), (t // 4, h // 4)):
        keys = jax.random.split(jax.random.key(0), 4)
        q = jax.random.normal(keys[0], (b, t, h, e), dtype)
        k, v = (jax.random.normal(x, (b, t, kv, e), dtype) for x in keys[1:3])
        w = jax.random.normal(keys[3], q.shape, jnp.float32)

        def run(fn, args=(q, k, v, w, window)):
            return _time_attention(fn, *args, 2 if dry_run else 20)
        reference, reference_s = run(attention.causal_attention)
        case = {"window": window, "heads": h, "kv_heads": kv, "seq_len": t, "head_size": e,
                "dtype": dtype.name}
        yield {**case, "path": "xla (blocked)", "ms": 1e3 * reference_s, "max_rel_err": 0.0}
        for name, fn in _attention_paths(platform_name, dry_run).items():
            got, seconds = run(fn)
            err = max(float(np.abs(g - r).max() / (np.abs(r).max() + 1e-30))
                      for g, r in zip(got, reference))
            yield {**case, "path": name, "ms": 1e3 * seconds, "max_rel_err": err}


def stage_packing(dry_run: bool):
    ks = TOY_PACK_K if dry_run else PACK_K
    shape = (16, 1, 1) if dry_run else (64, 2, 4)
    for k in ks:
        r = pack_bench.bench_shape(shape, k, 1 if dry_run else 3, 0.2 if dry_run else 2.0,
                                   2_000_000)
        solo, packed = r["solo"], r[f"packed x{k}"]
        if k == ks[0]:
            yield {"shape": r["shape"], "k": 1, **solo}
        yield {"shape": r["shape"], "k": k, **packed, "speedup": r["speedup"]}


def stage_sweep(dry_run: bool, out: str):
    """The quickstart sweep's smoke variant: `sweep run`, then `analyze`, as a user runs
    them (each a process of its own, on the whole device), into OUT/quickstart-sweep
    (the last check's is replaced: a resumed sweep would time nothing)."""
    sweep_dir = os.path.join(out, "quickstart-sweep")
    shutil.rmtree(sweep_dir, ignore_errors=True)
    for args in (("sweep", "run", QUICKSTART, "--sweep-dir", sweep_dir),
                 ("analyze", sweep_dir)):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "tinyscale.cli", *args], cwd=ROOT,
                              capture_output=True, text=True)
        yield {"command": "tinyscale " + " ".join(a for a in args[:2] if a != sweep_dir),
               "exit": done.returncode,
               "seconds": time.perf_counter() - start,
               "error": done.stderr.strip().splitlines()[-1] if done.returncode and
               done.stderr.strip() else ""}
    for run in sorted(os.listdir(os.path.join(sweep_dir, "runs"))):
        with open(os.path.join(sweep_dir, "runs", run, "eval.json")) as f:
            result = json.load(f)
        yield {"run": run, "eval_loss": result.get("loss"),
               "coherence": result.get("coherence")}


def goals(report: dict) -> dict:
    """The issue's goals on an H100 (#27): >= 40% MFU at ~125M, packing >= 5x at d64."""
    mfu = [r["mfu"] for r in report.get("steps", []) if r["shape"] == "125M"]
    speedups = [r["speedup"] for r in report.get("packing", []) if "speedup" in r]
    return {"mfu_125M": max(mfu, default=None), "mfu_125M_at_least_40%":
            bool(mfu) and max(mfu) >= 0.40, "packing_speedup": max(speedups, default=None),
            "packing_at_least_5x": bool(speedups) and max(speedups) >= 5.0}


def _table(rows: list[dict], columns: dict) -> list[str]:
    """Markdown rows: columns = {heading: (key, format)}."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [("" if r.get(k) is None else fmt.format(r[k])) for k, fmt in columns.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(report: dict) -> str:
    env = report.get("env") or {}
    lines = [f"# Device check{' (dry run: toy sizes)' if report['dry_run'] else ''}", "",
             f"{env.get('devices', '?')} x {env.get('device_kind', '?')} "
             f"({env.get('platform', '?')}), jax {env.get('versions', {}).get('jax', '?')}, "
             f"Python {env.get('python', '?')}; {report['date']}; `{report['command']}`.",
             f"Defaults here: {env.get('defaults')}; MFU against "
             f"{env.get('peak_flops', 0) / 1e12:.3g} TFLOP/s (tinyscale/train/metrics.py: the "
             "chip's bf16 data-sheet peak, or a measured float32 matmul peak).", "",
             "| stage | seconds | result |", "|---|---|---|"]
    lines += [f"| {n} | {s['seconds']} | {s['error'] or 'ok'} |"
              for n, s in report["stages"].items()]
    steps = sorted(report.get("steps", []), key=lambda r: (r["family"], r["params"]))
    lines += ["", "## Train step", ""] + _table(steps, {
        "family": ("family", "{}"), "shape": ("shape", "{}"), "params": ("params", "{:,}"),
        "seq x batch": ("seq_x_batch", "{}"), "compile s": ("compile_s", "{:.1f}"),
        "tokens/s": ("tokens_per_s", "{:,.0f}"), "MFU": ("mfu", "{:.1%}")})
    lines += ["## Attention against the blocked XLA path", ""] + _table(
        report.get("attention", []), {
            "path": ("path", "{}"), "window": ("window", "{}"), "heads/kv": ("kv_heads", "{}"),
            "T": ("seq_len", "{}"), "dtype": ("dtype", "{}"), "fwd+bwd ms": ("ms", "{:.2f}"),
            "max rel. error": ("max_rel_err", "{:.1e}")})
    lines += ["## Packing (runs of 2M tokens)", ""] + _table(report.get("packing", []), {
        "shape": ("shape", "{}"), "K": ("k", "{}"), "tokens/s": ("tokens_per_s", "{:,.0f}"),
        "compile s": ("compile_s", "{:.1f}"), "models/hour": ("models_per_hour", "{:,.0f}"),
        "with compile": ("models_per_hour_with_compile", "{:,.0f}"),
        "x solo": ("speedup", "{:.2f}")})
    lines += ["## Quickstart sweep (smoke variant)", ""] + _table(report.get("sweep", []), {
        "command": ("command", "{}"), "exit": ("exit", "{}"), "seconds": ("seconds", "{:.1f}"),
        "run": ("run", "{}"), "eval loss": ("eval_loss", "{:.3f}"),
        "coherence": ("coherence", "{:.3f}")})
    g = report["goals"]
    if report["dry_run"]:
        return "\n".join(lines + ["Dry run: toy sizes; the goals (issue 27) do not apply.", ""])
    lines += ["## Goals (issue 27, on an H100)", "",
              f"* MFU at ~125M >= 40%: {g['mfu_125M_at_least_40%']} (best "
              f"{'-' if g['mfu_125M'] is None else format(g['mfu_125M'], '.1%')})",
              f"* packing at d64 >= 5x models/hour: {g['packing_at_least_5x']} (best "
              f"{'-' if g['packing_speedup'] is None else format(g['packing_speedup'], '.2f')}x)",
              ""]
    return "\n".join(lines)


STAGES = {"env": stage_env, "steps": stage_steps, "attention": stage_attention,
          "packing": stage_packing, "sweep": stage_sweep}


def run_stage(name: str, out: str, dry_run: bool) -> None:
    """One stage in this process: its rows appended to OUT/stages/NAME.jsonl as they come."""
    process.for_compute()  # XLA flags and memory as the `tinyscale` command has them
    path = os.path.join(out, "stages", f"{name}.jsonl")
    result = STAGES[name](dry_run, out) if name == "sweep" else STAGES[name](dry_run)
    with open(path, "a") as f:
        for row in [result] if isinstance(result, dict) else result:
            f.write(json.dumps(row) + "\n")
            f.flush()


def _stage_process(name: str, out: str, dry_run: bool) -> str:
    """Run one stage in a process group of its own (the sweep's workers included), ended
    after LIMITS[name] seconds; "" or the error's last line."""
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--stage", name,
                              "--out", out, *(["--dry-run"] if dry_run else [])],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        _, err = child.communicate(timeout=LIMITS[name])
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGTERM)  # workers save and exit (EXIT_PREEMPTED)
        try:
            child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
        return f"stopped after its {LIMITS[name]} s (the rows before are kept)"
    return (err.strip().splitlines() or [f"exit {child.returncode}"])[-1] \
        if child.returncode else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "device_check_out"))
    parser.add_argument("--dry-run", action="store_true", help="toy sizes, any device")
    parser.add_argument("--stage", choices=tuple(STAGES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    if args.stage:
        run_stage(args.stage, out, args.dry_run)
        return 0
    os.makedirs(os.path.join(out, "stages"), exist_ok=True)
    report = {"dry_run": args.dry_run, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "command": " ".join(sys.argv), "stages": {}}
    for name in STAGES:
        path = os.path.join(out, "stages", f"{name}.jsonl")
        if os.path.exists(path):
            os.remove(path)
        start = time.perf_counter()
        error = _stage_process(name, out, args.dry_run)
        rows = []
        if os.path.exists(path):
            with open(path) as f:
                rows = [json.loads(line) for line in f]
        seconds = time.perf_counter() - start
        report["stages"][name] = {"seconds": round(seconds, 1), "error": error}
        report[name] = rows[0] if name == "env" and rows else rows
        print(f"device check: {name:<9} {seconds:6.1f} s  "
              f"{'ok' if not error else 'FAILED: ' + error}", flush=True)
    report["goals"] = goals(report)
    with open(os.path.join(out, "device_check.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, "device_check.md"), "w") as f:
        f.write(markdown(report))
    print(f"device check: {out}/device_check.json and device_check.md")
    return 1 if any(s["error"] for s in report["stages"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
