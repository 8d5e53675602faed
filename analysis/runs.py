"""Load a sweep directory into one tidy DataFrame: a row per run x eval step.

Columns: the run (`run`, `state`, `attempts`, `error`), its config flattened
(`model.d_model`, `train.lr`, `data.noise`, ...), its `architecture`
(analysis/architectures.py) and `data` setting (analysis/by_data.py),
parameters four ways (`params`, `params_embedding`,
`params_non_embedding`, `params_active`: a mixture's top-k experts only), `tokens`,
`flops` (training FLOPs so far), the losses at that step (`eval_loss`, `eval_bpb`,
`train_loss`), and on each run's last row (`final`) the evaluation of eval.json: every
coherence metric with its standard error (`coherence`, `coherence_se`, ...), and where
its time went (`goodput_<category>_s`, `goodput_lost_steps`: analysis/goodput.py). An
earlier step evaluated with `tinyscale eval --step` (eval-step<N>.json) fills its row's
metrics the same way. What trained each run (provenance.json: tinyscale/train/provenance.py)
is in `sessions` (how many times a trainer started it), `git_commit` and `git_dirty`
(None: unknown or not a checkout), `version_<package>`, `python_version`, `devices`
(count x kind) and `processes`; a run resumed on other code lists each value, oldest
first, joined by ", ". The
branches of a run (tinyscale/train/branches.py: a cool-down at a smaller token budget) are
runs too, named `<run>/branches/<tokens>`, with `branch_of` = the run (None for every
other run) and `trained_flops` = the FLOPs trained in that directory (a branch's
cool-down only; `flops` counts as if it were trained alone). Runs that failed, are
running or never started are kept, marked by `state`, with one row of NaNs if they
logged nothing. Paths may be gs:// (etils.epath).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from analysis import architectures, by_data, goodput
from tinyscale import config as config_lib
from tinyscale.errors import TinyscaleError
from tinyscale.evals.hf import EXTERNAL
from tinyscale.model import counting
from tinyscale.storage import resolve
from tinyscale.train import branches, provenance
from tinyscale.train.rundir import RunDir

CONFIG_COLUMNS = ("model.family", "model.d_model", "model.n_layers", "model.n_heads",
                  "model.d_ff", "model.n_experts", "model.experts_per_token",
                  "model.attention_pattern", "model.window_size", "model.parallel_block",
                  "train.lr", "train.batch_size", "train.seq_len", "seed", "data.dataset",
                  "data.vocab_size", "data.noise", "data.noise_kinds", "data.filter",
                  "data.filter_keep", "data.dir", "train.teacher", "train.distill_weight",
                  "train.distill_temperature")


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def data_label(config: dict) -> str:
    return by_data.label(config)


def architecture_label(config: dict) -> str:
    return architectures.label(config)


def _provenance(rundir: RunDir) -> dict:
    """The provenance columns of a run (module docstring); {"sessions": 0} without one."""
    sessions = provenance.read(rundir)
    if not sessions:
        return {"sessions": 0}

    def each(value) -> str | None:  # distinct values in session order
        values = [str(v) for v in dict.fromkeys(value(s) for s in sessions) if v is not None]
        return ", ".join(values) or None
    dirty = [s.get("git", {}).get("dirty") for s in sessions]
    return {"sessions": len(sessions),
            "git_commit": each(lambda s: s.get("git", {}).get("commit")),
            "git_dirty": True if True in dirty else False if all(d is False for d in dirty)
            else None,
            **{f"version_{p}": each(lambda s, p=p: s.get("versions", {}).get(p))
               for p in provenance.PACKAGES},
            "python_version": each(lambda s: s.get("python")),
            "devices": each(lambda s: f"{s['devices']} x {s['device_kind']}"
                            if "devices" in s else None),
            "processes": each(lambda s: s.get("processes"))}


EVAL_STEP = re.compile(r"eval-step(\d+)\.json")  # an earlier checkpoint's evaluation


def _metrics(result: dict) -> dict:
    """The metrics of an evaluation (eval.json) a row carries."""
    return {k: v for k, v in result.items() if k not in ("step", "loss", "loss_se") and (
        isinstance(v, (int, float)) or k == "judge_age_group")}


def _run_rows(name: str, config: dict, rundir: RunDir, branch_of: str | None = None
              ) -> list[dict]:
    c = config_lib.from_saved(config)
    counts = counting.of_config(c)
    per_token = counts["flops_per_token"]
    state = rundir.state()
    flat = _flatten(c.to_dict())
    base = {"run": name, "state": state.get("state", "pending"),
            "attempts": state.get("attempts", 0), "error": state.get("last_error"),
            **{k: flat.get(k) for k in CONFIG_COLUMNS}, "params": counts["total"],
            "params_embedding": counts["embedding"],
            "params_non_embedding": counts["non_embedding"],
            "params_active": counts["active"], "flops_per_token": per_token,
            "architecture": architecture_label(c.to_dict()),
            "data": data_label(c.to_dict()),
            "branch_of": branch_of, "external": name.startswith("external/"),
            **goodput.columns(rundir), **_provenance(rundir)}
    forked = (state.get("branched_from") or {}).get("step", 0) * c.train.batch_size * \
        c.train.seq_len  # tokens the run trained for the branch before its fork
    evals = [m for m in rundir.read_metrics() if "eval_loss" in m]
    rows = [{**base, "step": m["step"], "tokens": m["tokens"], "flops": per_token * m["tokens"],
             "trained_flops": per_token * max(0, m["tokens"] - forked),
             "eval_loss": m["eval_loss"], "eval_loss_se": m.get("eval_loss_se", np.nan),
             "eval_bpb": m.get("eval_bpb"),
             "train_loss": m.get("train_loss"), "wall_s": m.get("wall_s"), "final": False}
            for m in evals] or [{**base, "step": 0, "tokens": 0, "flops": 0.0,
                                 "trained_flops": 0.0, "eval_loss": np.nan, "final": False}]
    earlier = {int(m.group(1)): f for f in rundir.path.glob("eval-step*.json")
               if (m := EVAL_STEP.fullmatch(f.name))}
    for row in rows:
        if row["step"] in earlier:
            row.update(_metrics(rundir.read_json(earlier[row["step"]])))
    final = rundir.read_json(rundir.eval)
    if final and base["state"] == "done":
        rows[-1]["final"] = True
        rows[-1].update(_metrics(final))
    return rows


def load(sweep_dir: str) -> pd.DataFrame:
    """The sweep (or a single run directory) as one DataFrame."""
    path = resolve(sweep_dir)  # gs:// without gcsfs is one line, not a traceback
    if (path / "sweep.json").exists():
        sweep = json.loads((path / "sweep.json").read_text())
        runs = [(r["name"], r["config"], RunDir(path / "runs" / r["name"]))
                for r in sweep["runs"]]
    elif (path / "config.json").exists():
        runs = [(path.name, json.loads((path / "config.json").read_text()), RunDir(path))]
    else:
        raise TinyscaleError(f"{sweep_dir} is neither a sweep directory (sweep.json) nor a "
                             "run directory (config.json).")
    if (path / "sweep.json").exists() and (path / EXTERNAL).exists():  # eval --hf models
        runs += [(f"{EXTERNAL}/{d.name}", json.loads((d / "config.json").read_text()),
                  RunDir(d)) for d in sorted((path / EXTERNAL).iterdir())
                 if (d / "config.json").exists()]
    runs += [(f"{name}/{b.parent.name}/{b.name}", json.loads((b / "config.json").read_text()),
              RunDir(b), name) for name, _, rundir in runs for b in branches.list_dirs(rundir.path)]
    rows = [row for name, config, rundir, *of in runs
            for row in _run_rows(name, config, rundir, *of)]
    df = pd.DataFrame(rows)
    return df.rename(columns={"model.d_model": "width", "model.n_layers": "depth",
                              "model.n_heads": "heads"})


def final(df: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run: its final evaluation."""
    return df[df["final"]].reset_index(drop=True)


def samples(sweep_dir: str, names) -> dict[str, list[dict]]:
    """{run: its per-prompt rows (samples.jsonl of its final evaluation)} for `names`;
    runs without one are left out."""
    path = resolve(sweep_dir)
    runs_dir = path / "runs" if (path / "sweep.json").exists() else path.parent
    out = {}
    for name in names:
        file = (path if name.startswith("external/") else runs_dir) / name / "samples.jsonl"
        if file.exists():
            out[name] = [json.loads(x) for x in file.read_text().splitlines() if x.strip()]
    return out
