"""`tinyscale sweep tune-lr FILE --sweep-dir DIR`: the best learning rate of each shape of
a sweep, for the sweep to train with.

For each shape (the runs of a sweep that differ only in seed, learning rate and length:
`shape_key`), tune.lrs learning rates log-spaced over [tune.lr_min, tune.lr_max] train
tune.steps steps each -- the shape's first run, its schedule shortened -- packed into
one program per shape (launch.pack = tune.lrs: tinyscale/train/packed.py), as the runs
of a sweep of their own, DIR/tune-lr/ (resumable; `sweep status DIR/tune-lr` watches
it). Each run is then scored on its held-out sequences (the same for every learning
rate of a shape), and `choose` picks the best (its method: METHOD). The results go to
DIR/tuned_lr.json, which `tinyscale sweep run FILE --sweep-dir DIR` reads (`apply`): each
run trains at its shape's tuned learning rate.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from tinyscale import config as config_lib
from tinyscale import parallel
from tinyscale.data import pipeline
from tinyscale.errors import EXIT_INTERRUPTED, TinyscaleError
from tinyscale.launch import plan
from tinyscale.launch.local import run_local
from tinyscale.launch.sweepdir import SweepDir
from tinyscale.storage import resolve, write_atomic
from tinyscale.train import steps, trained

TUNED_FILE, TUNE_DIR = "tuned_lr.json", "tune-lr"
METHOD = ("the minimum of a parabola through the lowest mean held-out loss and its two "
          "neighbours on the log-lr grid; 95% interval: the same fit on a paired "
          "bootstrap over the held-out sequences (evaluation noise, not seed noise)")
# what a shape's tuned learning rate does not depend on: the run's own seed, rate and
# length, and the settings that change no number of training
_NOT_SHAPE = {"train": ("lr", "tokens", "steps", "branches", "log_every", "checkpoint_every",
                        "keep_checkpoints"),
              "data": ("cache_dir", "manual_dir")}
_LENGTH = ("seed", "train.lr", "train.tokens", "train.steps", "train.branches")


def shape_key(values) -> str:
    """The identity of a run's shape: its data, model and train settings less _NOT_SHAPE."""
    d = values.to_dict()
    kept = {section: {k: v for k, v in d[section].items()
                      if k not in _NOT_SHAPE.get(section, ())}
            for section in ("data", "model", "train")}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _shapes(path: str, runs: list[plan.Run]) -> dict[str, tuple[str, plan.Run]]:
    """{shape key: (label, the shape's first run)} in the sweep's order; a sweep whose
    runs of one shape set different learning rates is refused."""
    out, lrs, labels = {}, {}, set()
    for run in runs:
        key = shape_key(run.values)
        lrs.setdefault(key, set()).add(run.values.train.lr)
        if key in out:
            continue
        label = plan.run_name({k: v for k, v in run.overrides.items() if k not in _LENGTH})
        label = label if label not in labels else f"{label}-{len(labels)}"
        labels.add(label)
        out[key] = (label, run)
    for key, values in lrs.items():
        if len(values) > 1:
            raise TinyscaleError(
                f"{path}: the runs of shape {out[key][0]} set train.lr to "
                f"{', '.join(map(str, sorted(values)))}: tune-lr picks one learning rate "
                "per shape; drop train.lr from sweep() (the tuned one replaces it).")
    return out


def grid(tu) -> list[float]:
    """The tune.lrs learning rates, log-spaced from tune.lr_min to tune.lr_max."""
    return [float(x) for x in np.geomspace(tu.lr_min, tu.lr_max, tu.lrs)]


def _tune_runs(path: str, base, shapes: dict) -> tuple[list[plan.Run], dict]:
    """(the tuning runs, {shape key: their names}): K per shape, each the shape's first
    run at one rate, tune.steps long, packed K to a program, held-out loss only, a
    diverging one not retried (it is a result)."""
    runs, names, base_values = [], {}, config_lib.Values.of(base)
    for key, (label, first) in shapes.items():
        tu = first.values.tune
        for lr in grid(tu):
            name = f"{label}-{plan.run_name({'train.lr': f'{lr:.3g}'})}"
            names.setdefault(key, []).append(name)
            overrides = {**{k: v for k, v in first.overrides.items()
                            if k not in _LENGTH[1:]},
                         "train.lr": lr, "train.steps": tu.steps, "train.branches": (),
                         "train.checkpoint_every": tu.steps, "eval.every": tu.steps,
                         "eval.at_end": False, "launch.pack": tu.lrs,
                         "launch.max_attempts": 1}
            values = plan.apply(base_values, overrides, path, name)
            runs.append(plan.Run(len(runs), name, overrides, values))
    return runs, names


def parabola_minimum(x: np.ndarray, y: np.ndarray) -> float:
    """The x of the least y: at an interior minimum, the vertex of the parabola through
    it and its two neighbours (within half a grid step of it, on an even grid)."""
    i = int(np.argmin(y))
    if i in (0, len(y) - 1) or not np.all(np.isfinite(y[i - 1:i + 2])):
        return float(x[i])
    (x0, x1, x2), (y0, y1, y2) = x[i - 1:i + 2], y[i - 1:i + 2]
    slope_left, slope_right = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    if slope_right <= slope_left:  # flat: no curvature to place a vertex by
        return float(x[i])
    # the vertex of y0 + slope_left (x - x0) + c (x - x0)(x - x1), c the 2nd divided difference
    vertex = (x0 + x1) / 2 - slope_left * (x2 - x0) / (2 * (slope_right - slope_left))
    return float(np.clip(vertex, x0, x2))


def choose(lrs: list[float], losses_KS: np.ndarray, resamples: int, seed: int = 0) -> dict:
    """The best learning rate of one shape from each rate's held-out loss per sequence
    ([K, S], a row of inf: the run failed): METHOD. {"lr", "interval", "edge" (None, or
    "low"/"high": the best is the grid's end, the optimum may lie beyond), "eval_loss"}."""
    x = np.log(np.asarray(lrs, np.float64))
    losses_KS = np.asarray(losses_KS, np.float64)
    mean_K = losses_KS.mean(axis=1)
    if not np.isfinite(mean_K).any():
        raise ValueError("every learning rate failed")
    best = parabola_minimum(x, mean_K)
    rng = np.random.default_rng(seed)
    s = losses_KS.shape[1]
    picks = [parabola_minimum(x, losses_KS[:, rng.integers(0, s, s)].mean(axis=1))
             for _ in range(resamples)]
    low, high = np.percentile(picks, [2.5, 97.5])
    i = int(np.argmin(mean_K))
    edge = "low" if i == 0 else "high" if i == len(x) - 1 else None

    def rate(v):  # a grid point is that rate exactly (exp(log(x)) may differ from x)
        hits = np.flatnonzero(x == v)
        return float(lrs[hits[0]]) if hits.size else math.exp(v)
    return {"lr": rate(best), "interval": [rate(low), rate(high)], "edge": edge,
            "eval_loss": [float(v) if math.isfinite(v) else None for v in mean_K]}


def held_out_per_sequence(workdir: str, eval_step=None) -> tuple[np.ndarray, object]:
    """(the final model's loss on each held-out sequence the run's loop evaluated on,
    its eval step: reusable for the other runs of its shape)."""
    c = trained.saved_config(workdir)
    mesh = parallel.make_mesh(c)
    run = trained.load(workdir, mesh=mesh, config=c, say=lambda m: None)
    eval_step = eval_step or steps.make_eval_step(run.params, c.train.quick_compile)
    batches = pipeline.Batches(run.data_dir, "eval", c.train.seq_len, c.train.batch_size,
                               c.seed, 0, 1)
    return np.concatenate([np.asarray(eval_step(run.arrays, parallel.global_batch(
        batches.eval_batch(i), mesh))) for i in range(c.eval.batches)]), eval_step


def _results(tune_dir: SweepDir, shapes: dict, names: dict, say) -> dict:
    """{shape key: its tuned record} of the shapes with at least one finished run."""
    out = {}
    for key, (label, first) in shapes.items():
        rows, eval_step, states = [], None, []
        for name in names[key]:
            state = tune_dir.rundir(name).state().get("state")
            states.append(state)
            if state != "done":
                rows.append(None)
                continue
            losses, eval_step = held_out_per_sequence(str(tune_dir.rundir(name).path),
                                                      eval_step)
            rows.append(losses)
        width = next((len(r) for r in rows if r is not None), 0)
        if not width:
            say(f"{label}: no tuning run finished ({', '.join(map(str, states))}); see "
                f"tinyscale sweep status {tune_dir.path}")
            continue
        losses_KS = np.stack([r if r is not None else np.full(width, np.inf) for r in rows])
        lrs = grid(first.values.tune)
        record = choose(lrs, losses_KS, first.values.tune.bootstrap)
        out[key] = {"shape": label, **record, "grid": lrs, "states": states,
                    "sequences": width, "steps": first.values.tune.steps,
                    "runs": names[key]}
    return out


def _line(record: dict) -> str:
    low, high = record["interval"]
    edge = {"low": "; the best is the grid's lowest rate: lower tune.lr_min",
            "high": "; the best is the grid's highest rate: raise tune.lr_max"}
    failed = sum(s != "done" for s in record["states"])
    return (f"{record['shape']}: lr {record['lr']:.3g} (95% interval {low:.3g}-{high:.3g}; "
            f"held-out loss {min(v for v in record['eval_loss'] if v is not None):.4f})"
            + (f"; {failed} of {len(record['grid'])} rates failed" if failed else "")
            + edge.get(record["edge"], ""))


def tune(spec: str, overrides: dict, sweep_dir: str, parallel_runs: int, say) -> int:
    """Tune the learning rate of every shape of sweep file `spec`; write DIR/tuned_lr.json.
    0 when every shape has one, 1 when one has none, 130 when stopped."""
    path = spec.partition(":")[0]
    base, runs = plan.expand(spec, overrides)
    shapes = _shapes(path, runs)
    tune_runs, names = _tune_runs(path, base, shapes)
    tune_dir = SweepDir(resolve(sweep_dir) / TUNE_DIR)
    tune_dir.create(spec, base, tune_runs)
    say(f"tuning {len(shapes)} shapes x {base.tune.lrs} learning rates, {base.tune.steps} "
        f"steps each, in {tune_dir.path}")
    code = run_local(str(tune_dir.path), parallel_runs or base.launch.parallel, say)
    if code == EXIT_INTERRUPTED:
        return code
    say(f"scoring {len(tune_runs)} tuning runs on their held-out sequences...")
    results = _results(tune_dir, shapes, names, say)
    record = {"spec": spec, "method": METHOD, "shapes": results}
    write_atomic(SweepDir(sweep_dir).path / TUNED_FILE, json.dumps(record, indent=1) + "\n")
    for result in results.values():
        print(_line(result))
    say(f"wrote {SweepDir(sweep_dir).path / TUNED_FILE}: `tinyscale sweep run {spec} "
        f"--sweep-dir {sweep_dir}` trains each run at its shape's learning rate")
    return 0 if len(results) == len(shapes) else 1


def apply(sweep_dir: str, runs: list[plan.Run], say) -> list[plan.Run]:
    """`runs` with train.lr set from DIR/tuned_lr.json, when the sweep dir holds one (as
    they are otherwise): what `sweep run` trains."""
    where = SweepDir(sweep_dir).path / TUNED_FILE
    if not where.exists():
        return runs
    tuned = json.loads(where.read_text())["shapes"]
    seen: dict[str, tuple[str, float]] = {}
    for run in runs:
        key = shape_key(run.values)
        if key not in tuned:
            raise TinyscaleError(
                f"run {run.name}'s shape has no tuned learning rate in {where}: run "
                "`tinyscale sweep tune-lr` with the same file and --sweep-dir again (it "
                "tunes the new shapes), or move the file away to train at train.lr.")
        first = seen.setdefault(key, (run.name, run.values.train.lr))
        if first[1] != run.values.train.lr:
            raise TinyscaleError(
                f"runs {first[0]} and {run.name} are of one shape with train.lr "
                f"{first[1]} and {run.values.train.lr}, and {where} gives that shape one "
                "learning rate: drop train.lr from sweep(), or move the file away.")
        lr = tuned[key]["lr"]
        run.values.train.lr = lr
        run.overrides = {**run.overrides, "train.lr": lr}
    say(f"train.lr of {len(runs)} runs from {where} ({len(seen)} shapes)")
    return runs
